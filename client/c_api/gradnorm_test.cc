// The C ABI's collective paths: several ranks (threads) whose communicators
// are gn_communicator callbacks over in-memory groups, as a Python process
// supplies torch.distributed.
#include "client/c_api/gradnorm.h"

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "client/communicator.h"
#include "client/in_memory_communicator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace {

using ::testing::HasSubstr;

gn_code AllReduce(void* user, double* values, size_t n, int32_t op) {
  auto* comm = static_cast<Communicator*>(user);
  return static_cast<gn_code>(
      comm->AllReduce(absl::MakeSpan(values, n),
                      op == GN_REDUCE_SUM ? ReduceOp::kSum : ReduceOp::kMax)
          .code());
}

gn_code Broadcast(void* user, double* values, size_t n, int32_t root) {
  return static_cast<gn_code>(static_cast<Communicator*>(user)
                                  ->Broadcast(absl::MakeSpan(values, n), root)
                                  .code());
}

gn_code BroadcastBytes(void* user, uint8_t* bytes, size_t n, int32_t root) {
  std::string s(reinterpret_cast<char*>(bytes), n);
  absl::Status status =
      static_cast<Communicator*>(user)->BroadcastBytes(&s, root);
  if (!status.ok()) return static_cast<gn_code>(status.code());
  std::copy(s.begin(), s.end(), bytes);
  return GN_OK;
}

gn_code Barrier(void* user) {
  return static_cast<gn_code>(
      static_cast<Communicator*>(user)->Barrier().code());
}

gn_communicator* Wrap(Communicator* comm) {
  gn_communicator_callbacks c = {};
  c.user_data = comm;
  c.rank = comm->rank();
  c.size = comm->size();
  c.all_reduce = AllReduce;
  c.broadcast = Broadcast;
  c.broadcast_bytes = BroadcastBytes;
  c.barrier = Barrier;
  gn_communicator* out = nullptr;
  EXPECT_EQ(gn_communicator_create(&c, &out), GN_OK) << gn_last_error();
  return out;
}

// One rank's fp32 tensors as gn_tensors.
struct Grads {
  std::vector<std::vector<float>> storage;
  std::vector<uint64_t> data;
  std::vector<int64_t> numel;
  std::vector<uint8_t> replication;
  gn_tensors t = {};

  void Add(std::vector<float> values, uint8_t rep = GN_SHARDED) {
    storage.push_back(std::move(values));
    replication.push_back(rep);
  }
  const gn_tensors* View() {
    data.clear();
    numel.clear();
    for (auto& s : storage) {
      data.push_back(reinterpret_cast<uintptr_t>(s.data()));
      numel.push_back(static_cast<int64_t>(s.size()));
    }
    t.count = storage.size();
    t.data = data.data();
    t.numel = numel.data();
    t.replication = replication.data();
    return &t;
  }
};

// DP 2 x TP 2: W sharded over both, a bias replicated over TP, and a tensor
// replicated over DP counted at DP coordinate 0 only: the norm is that of
// the whole unsharded gradient on every rank.
TEST(CApiTest, GetGradNormOverCallbackGroupsCountsEachElementOnce) {
  auto dp_groups = std::vector<std::vector<std::unique_ptr<Communicator>>>();
  auto tp_groups = std::vector<std::vector<std::unique_ptr<Communicator>>>();
  for (int i = 0; i < 2; ++i) {
    dp_groups.push_back(*CreateInMemoryGroup(2, absl::Seconds(20)));
    tp_groups.push_back(*CreateInMemoryGroup(2, absl::Seconds(20)));
  }
  std::vector<gn_grad_norm_result> results(4);
  std::vector<gn_code> codes(4);
  std::vector<std::thread> threads;
  for (int r = 0; r < 4; ++r) {
    threads.emplace_back([&, r] {
      const int dp = r / 2, tp = r % 2;
      gn_communicator* dp_comm = Wrap(dp_groups[tp][dp].get());
      gn_communicator* tp_comm = Wrap(tp_groups[dp][tp].get());
      Grads g;
      g.Add({1.0f + r, 2.0f});                                     // W shard
      g.Add({0.5f, 1.5f}, GN_TP_REPLICATED);                       // bias of dp
      g.Add({3.0f}, dp == 0 ? GN_SHARDED : GN_COUNTED_ELSEWHERE);  // DP replica
      codes[r] = gn_get_grad_norm(g.View(), dp_comm, tp_comm, 2.0, 0, nullptr,
                                  &results[r]);
      gn_communicator_destroy(dp_comm);
      gn_communicator_destroy(tp_comm);
    });
  }
  for (auto& t : threads) t.join();
  // W: 1,2,3,4 and 2 four times; biases: 0.5, 1.5 once per DP rank (2);
  // the DP replica: 3 once per TP rank at DP coordinate 0 (2).
  const double expected =
      std::sqrt(1 + 4 + 9 + 16 + 4 * 4.0 + 2 * (0.25 + 2.25) + 2 * 9.0);
  for (int r = 0; r < 4; ++r) {
    ASSERT_EQ(codes[r], GN_OK);
    EXPECT_DOUBLE_EQ(results[r].total_norm, expected);
    EXPECT_EQ(results[r].total_norm, results[0].total_norm);  // bitwise
  }
}

TEST(CApiTest, BadInputOnOneRankFailsEveryRankWithoutHanging) {
  auto group = *CreateInMemoryGroup(2, absl::Seconds(20));
  std::vector<gn_code> codes(2);
  std::vector<std::string> messages(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      gn_communicator* dp = Wrap(group[r].get());
      Grads g;
      g.Add({3.0f, 4.0f});
      gn_tensors t = *g.View();
      if (r == 1)
        t.error = "parameter 2's gradient has strides (1, 4); expected dense";
      gn_grad_norm_result result;
      codes[r] = gn_get_grad_norm(&t, dp, nullptr, 2.0, 0, nullptr, &result);
      messages[r] = gn_last_error();
      gn_communicator_destroy(dp);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(codes[1], GN_INVALID_ARGUMENT);
  EXPECT_EQ(messages[1],
            "parameter 2's gradient has strides (1, 4); expected dense");
  EXPECT_EQ(codes[0], GN_ABORTED);
  EXPECT_THAT(messages[0], HasSubstr("1 rank(s)"));
}

TEST(CApiTest, ClipperWithoutCoordinatorDecidesLocallyAndClips) {
  gn_clipper_options options = {};
  options.norm_type = 2.0;
  options.max_norm = 1.0;
  gn_clipper* clipper = nullptr;
  ASSERT_EQ(
      gn_clipper_create(nullptr, nullptr, nullptr, &options, nullptr, &clipper),
      GN_OK)
      << gn_last_error();
  Grads g;
  g.Add({3.0f, 4.0f});
  gn_step_result result;
  ASSERT_EQ(gn_clipper_step(clipper, 0, g.View(), nullptr, &result), GN_OK)
      << gn_last_error();
  EXPECT_EQ(result.total_norm, 5.0);
  EXPECT_EQ(result.action, GN_ACTION_CLIP);
  EXPECT_EQ(result.reason, GN_REASON_ABOVE_MAX_NORM);
  EXPECT_DOUBLE_EQ(result.clip_coef, 1.0 / 5.000001);
  EXPECT_NE(result.reason_detail, nullptr);
  EXPECT_FLOAT_EQ(g.storage[0][0], 3.0f / 5.000001f);

  // A NaN: SKIP, nothing written.
  g.storage[0] = {NAN, 1.0f};
  ASSERT_EQ(gn_clipper_step(clipper, 1, g.View(), nullptr, &result), GN_OK);
  EXPECT_EQ(result.action, GN_ACTION_SKIP);
  EXPECT_EQ(result.nonfinite, 1);
  EXPECT_EQ(g.storage[0][1], 1.0f);
  gn_clipper_destroy(clipper);
}

TEST(CApiTest, ClipperRejectsARunConfigThatDoesNotParse) {
  gn_client_options client_options = {};
  client_options.target = "127.0.0.1:1";
  gn_coordinator_client* client = nullptr;
  ASSERT_EQ(gn_coordinator_client_create(&client_options, &client), GN_OK);
  gn_coordinator_binding binding = {};
  binding.client = client;
  binding.run_id = "run";
  binding.run_config_json = "{\"participants\": 2, \"clip_polcy\": {}}";
  gn_clipper_options options = {};
  options.norm_type = 2.0;
  gn_clipper* clipper = nullptr;
  EXPECT_EQ(gn_clipper_create(nullptr, nullptr, nullptr, &options, &binding,
                              &clipper),
            GN_INVALID_ARGUMENT);
  EXPECT_THAT(gn_last_error(), HasSubstr("run_config_json does not parse"));
  EXPECT_EQ(clipper, nullptr);
  gn_coordinator_client_destroy(client);
}

// The leader's config that does not parse fails Create on every rank of the
// job (through the leader's outcome); no rank is left waiting for it.
TEST(CApiTest, LeadersBadRunConfigFailsEveryRankOfTheJob) {
  auto job = *CreateInMemoryGroup(2, absl::Seconds(20));
  gn_client_options client_options = {};
  client_options.target = "127.0.0.1:1";
  std::vector<gn_code> codes(2);
  std::vector<std::string> messages(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      gn_communicator* job_comm = Wrap(job[r].get());
      gn_coordinator_client* client = nullptr;
      if (r == 0) gn_coordinator_client_create(&client_options, &client);
      gn_coordinator_binding binding = {};
      binding.client = client;
      binding.run_id = "run";
      // Rank 1's config is not read (it would not parse either).
      binding.run_config_json = r == 0 ? "{\"participants\": \"two\"}" : "{";
      gn_clipper_options options = {};
      options.norm_type = 2.0;
      gn_clipper* clipper = nullptr;
      codes[r] = gn_clipper_create(nullptr, nullptr, job_comm, &options,
                                   &binding, &clipper);
      messages[r] = gn_last_error();
      EXPECT_EQ(clipper, nullptr);
      gn_coordinator_client_destroy(client);
      gn_communicator_destroy(job_comm);
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(codes[r], GN_INVALID_ARGUMENT) << r;
    EXPECT_THAT(messages[r], HasSubstr("run_config_json does not parse")) << r;
  }
}

TEST(CApiTest, CoordinatorCallChecksMethodRequestAndTimeout) {
  gn_client_options options = {};
  options.target = "127.0.0.1:1";
  options.security = 5;
  gn_coordinator_client* client = nullptr;
  EXPECT_EQ(gn_coordinator_client_create(&options, &client),
            GN_INVALID_ARGUMENT);
  EXPECT_THAT(gn_last_error(), HasSubstr("security 5 is unknown"));
  options.security = GN_INSECURE;
  ASSERT_EQ(gn_coordinator_client_create(&options, &client), GN_OK);
  char* response = nullptr;
  EXPECT_EQ(gn_coordinator_client_call(client, "Report", "{}", 1.0, &response),
            GN_INVALID_ARGUMENT);
  EXPECT_THAT(gn_last_error(), HasSubstr("unknown method \"Report\""));
  EXPECT_EQ(gn_coordinator_client_call(client, "GetRun", "{\"run\": 1}", 1.0,
                                       &response),
            GN_INVALID_ARGUMENT);
  EXPECT_THAT(gn_last_error(), HasSubstr("GetRun's request does not parse"));
  EXPECT_EQ(
      gn_coordinator_client_call(client, "ListRuns", "{}", 0.0, &response),
      GN_INVALID_ARGUMENT);
  // Nobody listens on port 1: UNAVAILABLE retried until the deadline.
  EXPECT_EQ(
      gn_coordinator_client_call(client, "ListRuns", "{}", 0.3, &response),
      GN_DEADLINE_EXCEEDED);
  EXPECT_EQ(response, nullptr);
  gn_coordinator_client_destroy(client);
}

}  // namespace
}  // namespace gradnorm
