#include "client/grad_utils.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "client/in_memory_communicator.h"
#include "client/single_process_communicator.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr float kNaNf = std::numeric_limits<float>::quiet_NaN();

// A DP x TP mesh of in-memory communicators; job rank r = dp * tp_size + tp.
struct Mesh {
  int dp_size;
  int tp_size;
  std::vector<std::vector<std::unique_ptr<Communicator>>> dp_groups;  // per tp
  std::vector<std::vector<std::unique_ptr<Communicator>>> tp_groups;  // per dp

  Mesh(int dp, int tp) : dp_size(dp), tp_size(tp) {
    for (int t = 0; t < tp; ++t) {
      dp_groups.push_back(*CreateInMemoryGroup(dp, absl::Seconds(20)));
    }
    for (int d = 0; d < dp; ++d) {
      tp_groups.push_back(*CreateInMemoryGroup(tp, absl::Seconds(20)));
    }
  }
  Communicator& dp_comm(int rank) {
    return *dp_groups[rank % tp_size][rank / tp_size];
  }
  Communicator& tp_comm(int rank) {
    return *tp_groups[rank / tp_size][rank % tp_size];
  }
  int size() const { return dp_size * tp_size; }
};

// Runs GetGradNorm on every rank of `mesh` (one thread each).
std::vector<absl::StatusOr<GradNormResult>> NormOnMesh(
    Mesh& mesh, std::vector<std::vector<GradTensor>>& grads, double p,
    GradNormOptions options = {}) {
  std::vector<absl::StatusOr<GradNormResult>> results(mesh.size());
  std::vector<std::thread> threads;
  for (int r = 0; r < mesh.size(); ++r) {
    threads.emplace_back([&, r] {
      results[r] =
          GetGradNorm(grads[r], mesh.dp_comm(r), mesh.tp_comm(r), p, options);
    });
  }
  for (std::thread& t : threads) t.join();
  return results;
}

absl::StatusOr<GradNormResult> SoloNorm(std::vector<GradTensor> grads,
                                        double p) {
  SingleProcessCommunicator solo;
  return GetGradNorm(grads, solo, solo, p);
}

// The reference values of docs/numerics.md.
TEST(GetGradNormTest, SeedVectors) {
  std::vector<float> a = {3, 4};
  std::vector<float> b = {1, 2};
  std::vector<GradTensor> grads = {GradTensor::Cpu(a.data(), 2),
                                   GradTensor::Cpu(b.data(), 2)};
  absl::StatusOr<GradNormResult> two = SoloNorm(grads, 2.0);
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->total_norm, 5.477225575051661);
  EXPECT_EQ(two->partial, 30.0);
  EXPECT_EQ(two->num_elements, 4u);
  EXPECT_FALSE(two->nonfinite);
  EXPECT_EQ(SoloNorm(grads, 1.0)->total_norm, 10.0);
  EXPECT_NEAR(SoloNorm(grads, 3.0)->total_norm, 4.641588833612778, 1e-15);

  std::vector<float> c = {-3, 7};
  EXPECT_EQ(SoloNorm({GradTensor::Cpu(c.data(), 2)}, kInf)->total_norm, 7.0);
}

TEST(GetGradNormTest, EmptyInputIsZero) {
  absl::StatusOr<GradNormResult> none = SoloNorm({}, 2.0);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->total_norm, 0.0);
  EXPECT_EQ(none->num_elements, 0u);
  EXPECT_EQ(SoloNorm({GradTensor::Cpu(static_cast<float*>(nullptr), 0)}, kInf)
                ->total_norm,
            0.0);
}

TEST(GetGradNormTest, InvalidNormTypes) {
  for (double p : {0.0, -1.0, std::nan(""), -kInf}) {
    absl::StatusOr<GradNormResult> r = SoloNorm({}, p);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << p;
  }
  EXPECT_EQ(SoloNorm({}, -1.0).status().message(),
            "norm_type -1 is invalid: expected p > 0 (a finite value or +inf)");
}

// docs/numerics.md: TP=2, W sharded as [1,2] | [2,4], b=[0,1] replicated ->
// sqrt(26).
TEST(GetGradNormTest, TensorParallelReplicatedCountedOnce) {
  Mesh mesh(1, 2);
  std::vector<float> w0 = {1, 2}, w1 = {2, 4}, b0 = {0, 1}, b1 = {0, 1};
  GradTensor bias0 = GradTensor::Cpu(b0.data(), 2);
  GradTensor bias1 = GradTensor::Cpu(b1.data(), 2);
  bias0.tp_replicated = bias1.tp_replicated = true;
  std::vector<std::vector<GradTensor>> grads = {
      {GradTensor::Cpu(w0.data(), 2), bias0},
      {GradTensor::Cpu(w1.data(), 2), bias1}};
  auto results = NormOnMesh(mesh, grads, 2.0);
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r].status();
    EXPECT_EQ(results[r]->total_norm, std::sqrt(26.0)) << "rank " << r;
    EXPECT_EQ(results[r]->num_elements, 6u);
  }
}

// 2 DP x 2 TP over shards of one gradient of 40 elements: every rank gets the
// fp64 norm of the whole gradient.
TEST(GetGradNormTest, DataAndTensorParallelShardsGiveTheFullNorm) {
  std::vector<float> full(40);
  for (int i = 0; i < 40; ++i) full[i] = 0.25f * (i - 17) + (i % 3) * 0.125f;
  for (double p : {1.0, 2.0, 3.0, kInf}) {
    double expected = 0;
    for (float v : full) {
      expected = p == kInf ? std::max(expected, std::fabs(double{v}))
                           : expected + std::pow(std::fabs(double{v}), p);
    }
    if (p != kInf) expected = std::pow(expected, 1.0 / p);
    Mesh mesh(2, 2);
    std::vector<std::vector<float>> shards(4);
    std::vector<std::vector<GradTensor>> grads(4);
    for (int r = 0; r < 4; ++r) {
      shards[r].assign(full.begin() + 10 * r, full.begin() + 10 * (r + 1));
      grads[r] = {GradTensor::Cpu(shards[r].data(), 10)};
    }
    auto results = NormOnMesh(mesh, grads, p);
    for (int r = 0; r < 4; ++r) {
      ASSERT_TRUE(results[r].ok()) << results[r].status();
      EXPECT_NEAR(results[r]->total_norm, expected, 1e-12 * expected)
          << "p=" << p << " rank " << r;
      EXPECT_EQ(results[r]->total_norm, results[0]->total_norm);
    }
  }
}

// The exact norm: the same model sharded as 1 rank, DP 2, DP 4, and TP 2
// with replicated tensors (plus DP 2 x TP 2) gives the same bits everywhere,
// equal to the element-by-element exact sum, on every rank.
TEST(GetGradNormTest, ExactNormIsTheSameBitsForEveryLayout) {
  std::mt19937_64 random(7);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  // A matrix sharded by rows and a bias replicated over TP; extremes in it.
  std::vector<float> matrix(4096), bias(64);
  for (float& v : matrix) v = normal(random);
  for (float& v : bias) v = normal(random);
  matrix[5] = 6e31f;
  matrix[77] = 1e-30f;
  matrix[901] = 1e-44f;  // subnormal
  for (double p : {1.0, 2.0}) {
    ExactSum oracle;
    for (float v : matrix) p == 2 ? oracle.AddSquare(v) : oracle.AddAbs(v);
    for (float v : bias) p == 2 ? oracle.AddSquare(v) : oracle.AddAbs(v);
    const double expected = NormFromPartial(p, oracle.RoundToDouble());
    GradNormOptions options;
    options.partial.exact = true;
    for (auto [dp, tp] : std::vector<std::pair<int, int>>{
             {1, 1}, {2, 1}, {4, 1}, {1, 2}, {2, 2}, {8, 1}}) {
      Mesh mesh(dp, tp);
      const int ranks = dp * tp;
      std::vector<std::vector<GradTensor>> grads(ranks);
      // DP 8: the matrix over ranks 0-3, ranks 4-7 empty (no gradients).
      const int holders = ranks == 8 ? 4 : ranks;
      const size_t per_rank = matrix.size() / holders;
      for (int r = 0; r < ranks; ++r) {
        if (r >= holders) continue;
        grads[r].push_back(
            GradTensor::Cpu(matrix.data() + r * per_rank, per_rank));
        // The bias: on every TP rank of the first DP rank, counted once.
        if (r / tp == 0) {
          GradTensor b = GradTensor::Cpu(bias.data(), bias.size());
          b.tp_replicated = true;
          grads[r].push_back(b);
        }
      }
      auto results = NormOnMesh(mesh, grads, p, options);
      for (int r = 0; r < ranks; ++r) {
        ASSERT_TRUE(results[r].ok()) << results[r].status();
        ASSERT_TRUE(results[r]->exact.has_value());
        EXPECT_EQ(results[r]->exact->Encode(), oracle.Encode())
            << "p " << p << ", DP " << dp << " x TP " << tp << ", rank " << r;
        EXPECT_EQ(results[r]->total_norm, expected);
      }
    }
  }
}

TEST(GetGradNormTest, RankWithoutGradientsJoinsAndContributesZero) {
  Mesh mesh(2, 1);
  std::vector<float> w = {3, 4};
  std::vector<std::vector<GradTensor>> grads = {{},
                                                {GradTensor::Cpu(w.data(), 2)}};
  auto results = NormOnMesh(mesh, grads, 2.0);
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r].status();
    EXPECT_EQ(results[r]->total_norm, 5.0);
  }
}

TEST(GetGradNormTest, NaNOnOneRankMakesEveryRankNonFinite) {
  for (double p : {2.0, kInf}) {
    Mesh mesh(2, 2);
    std::vector<std::vector<float>> data = {
        {1, 2}, {3, kNaNf}, {std::numeric_limits<float>::infinity(), 1}, {5}};
    std::vector<std::vector<GradTensor>> grads(4);
    for (int r = 0; r < 4; ++r) {
      grads[r] = {GradTensor::Cpu(data[r].data(), data[r].size())};
    }
    auto results = NormOnMesh(mesh, grads, p);
    for (int r = 0; r < 4; ++r) {
      ASSERT_TRUE(results[r].ok()) << results[r].status();
      EXPECT_TRUE(std::isnan(results[r]->total_norm))
          << "p=" << p << " rank " << r << ": " << results[r]->total_norm;
      EXPECT_TRUE(results[r]->nonfinite);
    }
    GradNormOptions strict;
    strict.error_if_nonfinite = true;
    Mesh mesh2(2, 2);
    results = NormOnMesh(mesh2, grads, p, strict);
    for (int r = 0; r < 4; ++r) {
      EXPECT_EQ(results[r].status().code(),
                absl::StatusCode::kFailedPrecondition);
      EXPECT_TRUE(absl::StrContains(results[r].status().message(),
                                    "the total gradient norm is nan"))
          << results[r].status();
    }
  }
}

TEST(GetGradNormTest, LocalErrorOnOneRankFailsEveryRankWithoutHanging) {
  Mesh mesh(2, 1);
  std::vector<float> w = {3, 4};
  // Rank 0 passes a tensor that claims elements but has no data.
  std::vector<std::vector<GradTensor>> grads = {
      {GradTensor::Cpu(static_cast<float*>(nullptr), 5)},
      {GradTensor::Cpu(w.data(), 2)}};
  auto results = NormOnMesh(mesh, grads, 2.0);
  EXPECT_EQ(results[0].status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(results[1].status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(results[1].status().message(),
            "1 rank(s) of the dp_cp x tp group failed to compute their partial "
            "norm (see their logs); no result");
}

// A replicated tensor is counted on TP rank 0 only, but its view is checked on
// every rank: a bad one on TP rank 1 fails the whole group up front instead of
// only that rank's clip later.
TEST(GetGradNormTest, BadReplicatedViewOnTpRankOneFailsEveryRank) {
  Mesh mesh(1, 2);
  std::vector<float> w0 = {1, 2}, w1 = {2, 4}, b0 = {0, 1};
  GradTensor bias0 = GradTensor::Cpu(b0.data(), 2);
  GradTensor bias1 = GradTensor::Cpu(static_cast<float*>(nullptr), 2);
  bias0.tp_replicated = bias1.tp_replicated = true;
  std::vector<std::vector<GradTensor>> grads = {
      {GradTensor::Cpu(w0.data(), 2), bias0},
      {GradTensor::Cpu(w1.data(), 2), bias1}};
  auto results = NormOnMesh(mesh, grads, 2.0);
  EXPECT_EQ(results[1].status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(results[1].status().message(),
            "tensors[1]: data is null with numel 2; expected a non-null "
            "pointer when numel > 0");
  EXPECT_EQ(results[0].status().code(), absl::StatusCode::kAborted);
  results = NormOnMesh(mesh, grads, kInf);
  EXPECT_EQ(results[1].status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(results[0].status().code(), absl::StatusCode::kAborted);
}

// An error the caller found before the call (input_error) fails its rank
// with that error and the others with ABORTED, after all joined.
TEST(GetGradNormTest, InputErrorOnOneRankFailsEveryRankWithoutHanging) {
  Mesh mesh(2, 1);
  std::vector<float> w = {3, 4};
  std::vector<std::vector<GradTensor>> grads = {{GradTensor::Cpu(w.data(), 2)},
                                                {GradTensor::Cpu(w.data(), 2)}};
  std::vector<absl::StatusOr<GradNormResult>> results(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      GradNormOptions options;
      if (r == 1) {
        options.input_error =
            absl::InvalidArgumentError("parameter 7's gradient is not dense");
      }
      results[r] =
          GetGradNorm(grads[r], mesh.dp_comm(r), mesh.tp_comm(r), 2.0, options);
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(results[1].status(),
            absl::InvalidArgumentError("parameter 7's gradient is not dense"));
  EXPECT_EQ(results[0].status().code(), absl::StatusCode::kAborted);
}

// A replica counted elsewhere (a DTensor replicated over a dp_cp mesh
// dimension, at coordinate 1) adds nothing here: DP 2 with the replica
// counted on rank 0 only gives the norm of one copy.
TEST(GetGradNormTest, ReplicaCountedElsewhereIsCountedOnce) {
  Mesh mesh(2, 1);
  std::vector<float> w0 = {3}, w1 = {4}, r = {1, 2};
  GradTensor replica0 = GradTensor::Cpu(r.data(), 2);
  GradTensor replica1 = replica0;
  replica1.counted_elsewhere = true;
  std::vector<std::vector<GradTensor>> grads = {
      {GradTensor::Cpu(w0.data(), 1), replica0},
      {GradTensor::Cpu(w1.data(), 1), replica1}};
  auto results = NormOnMesh(mesh, grads, 2.0);
  for (const auto& result : results) {
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->total_norm, std::sqrt(30.0));  // 9 + 16 + 1 + 4
    EXPECT_EQ(result->num_elements, 4u);
  }
}

std::vector<GradTensor> Views(std::vector<float>& a, std::vector<float>& b) {
  return {GradTensor::Cpu(a.data(), a.size()),
          GradTensor::Cpu(b.data(), b.size())};
}

TEST(ClipGradByTotalNormTest, SeedVectors) {
  {
    std::vector<float> a = {3, 4}, b = {1, 2};
    absl::StatusOr<ClipResult> r = ClipGradByTotalNorm(Views(a, b), 1.0, 5.0);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r->clipped);
    EXPECT_EQ(r->clip_coef, 1.0 / 5.000001);
    EXPECT_NEAR(r->clip_coef, 0.19999996, 1e-8);
    EXPECT_EQ(a[0], 3.0f * static_cast<float>(r->clip_coef));
    EXPECT_EQ(b[1], 2.0f * static_cast<float>(r->clip_coef));
  }
  {
    std::vector<float> a = {3, 4}, b = {1, 2};
    absl::StatusOr<ClipResult> r = ClipGradByTotalNorm(Views(a, b), 10.0, 5.0);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_FALSE(r->clipped);
    EXPECT_EQ(r->clip_coef, 1.0);
    EXPECT_EQ(a, (std::vector<float>{3, 4}));
    EXPECT_EQ(b, (std::vector<float>{1, 2}));
  }
  {
    std::vector<float> a = {3, 4}, b = {1, 2};
    absl::StatusOr<ClipResult> r = ClipGradByTotalNorm(Views(a, b), 2.0, 4.0);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->clip_coef, 2.0 / 4.000001);
    EXPECT_EQ(a[1], 4.0f * static_cast<float>(2.0 / 4.000001));
  }
}

// fp32 gradients whose squares overflow fp32: the fp64 norm stays finite and
// clipping brings it to max_norm.
TEST(ClipGradByTotalNormTest, HugeFp32GradientsClipToMaxNorm) {
  std::vector<float> g = {6e31f, 4};
  std::vector<GradTensor> grads = {GradTensor::Cpu(g.data(), 2)};
  absl::StatusOr<GradNormResult> norm = SoloNorm(grads, 2.0);
  ASSERT_TRUE(norm.ok()) << norm.status();
  EXPECT_FALSE(norm->nonfinite);
  EXPECT_NEAR(norm->total_norm, 6e31, 6e31 * 1e-7);
  ASSERT_TRUE(ClipGradByTotalNorm(grads, 0.3, norm->total_norm).ok());
  absl::StatusOr<GradNormResult> after = SoloNorm(grads, 2.0);
  EXPECT_LE(after->total_norm, 0.3 + 1e-6);
  EXPECT_GT(after->total_norm, 0.29);
}

TEST(ClipGradByTotalNormTest, Bf16GradientsAreScaledInTheirOwnStorage) {
  // bf16 bit patterns: 2.0 = 0x4000, -4.0 = 0xC080.
  std::vector<uint16_t> g = {0x4000, 0xC080};
  std::vector<GradTensor> grads = {
      GradTensor::Cpu(g.data(), 2, DType::kBFloat16)};
  // max 1, total 2 - 1e-6: coef = 0.5 exactly.
  absl::StatusOr<ClipResult> r = ClipGradByTotalNorm(grads, 1.0, 2.0 - 1e-6);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->clipped);
  EXPECT_EQ(g[0], 0x3F80);  // 1.0
  EXPECT_EQ(g[1], 0xC000);  // -2.0
}

TEST(ClipGradByTotalNormTest, NonFiniteTotalLeavesGradientsUntouched) {
  std::vector<float> a = {3, 4}, b = {1, 2};
  for (double total : {std::nan(""), kInf}) {
    absl::StatusOr<ClipResult> r = ClipGradByTotalNorm(Views(a, b), 1.0, total);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r->nonfinite);
    EXPECT_FALSE(r->clipped);
    EXPECT_EQ(a, (std::vector<float>{3, 4}));
    ClipOptions strict;
    strict.error_if_nonfinite = true;
    EXPECT_EQ(
        ClipGradByTotalNorm(Views(a, b), 1.0, total, strict).status().code(),
        absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(a, (std::vector<float>{3, 4}));
  }
}

TEST(ClipGradByTotalNormTest, InvalidArguments) {
  std::vector<float> a = {3, 4}, b = {1, 2};
  absl::StatusOr<ClipResult> r = ClipGradByTotalNorm(Views(a, b), -1.0, 5.0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "max_norm -1 is invalid: expected a value >= 0");
  EXPECT_EQ(ClipGradByTotalNorm(Views(a, b), std::nan(""), 5.0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ClipGradByTotalNorm(Views(a, b), 1.0, -2.0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a, (std::vector<float>{3, 4}));
  // A bad view is refused whether or not this total would scale anything
  // (coef 2 here, and a non-finite total).
  const GradTensor null_view = GradTensor::Cpu(static_cast<float*>(nullptr), 5);
  for (double total : {0.5, std::numeric_limits<double>::infinity()}) {
    EXPECT_EQ(ClipGradByTotalNorm({null_view}, 1.0, total).status().code(),
              absl::StatusCode::kInvalidArgument)
        << total;
  }
}

}  // namespace
}  // namespace gradnorm
