/* gradnorm's C ABI: the client library (kernels, GetGradNorm,
 * ClipGradByTotalNorm, GradNormClipper, the coordinator client) for callers in
 * any language, over plain C types only. libgradnorm.so exports exactly these
 * functions; the Python package `gradnorm` is built on them with ctypes.
 *
 *   gn_tensors grads = {0};
 *   grads.count = 2;
 *   grads.data = addresses;            // uint64_t[2]: where each tensor starts
 *   grads.numel = numels;              // int64_t[2]
 *   gn_grad_norm_result norm;
 *   if (gn_get_grad_norm(&grads, NULL, NULL, 2.0, NULL, &norm) != GN_OK) {
 *     fprintf(stderr, "%s\n", gn_last_error());
 *   }
 *   gn_clip_result clip;
 *   gn_clip_grad_by_total_norm(&grads, 1.0, norm.total_norm, NULL, &clip);
 *
 * Semantics are those of the C++ headers named at each function: each rank's
 * partial S = sum |g|^p (max |g| for p = inf) is accumulated in fp64, reduced
 * over dp_cp and then tp (NaN wins a max), and total = S^(1/p); clipping
 * scales by max_norm / (total + 1e-6) when that is < 1 and the total is finite,
 * in each tensor's own dtype.
 *
 * Errors: every fallible function returns a gn_code, the absl::StatusCode
 * number (GN_OK is 0). After a non-zero code, gn_last_error() returns the
 * message, which says what was wrong and what was expected; it stays valid on
 * this thread until the next call into the library. No function aborts or
 * throws on bad input.
 *
 * Ownership: objects come from gn_*_create and go back through the matching
 * gn_*_destroy (NULL is accepted there). Strings the library returns in a
 * `char**` are the caller's, freed with gn_free. Input pointers are only read
 * during the call.
 *
 * Thread-safety: the functions are reentrant. A gn_communicator, and a
 * gn_clipper with its communicators, is used by one thread at a time; a
 * gn_coordinator_client may be shared.
 *
 * CUDA: tensors on a CUDA device run on the given cudaStream_t (NULL: the
 * legacy default stream) of the caller's runtime. A library or a machine
 * without CUDA answers FAILED_PRECONDITION for CUDA tensors; nothing else
 * depends on CUDA being present.
 */
#ifndef GRADNORM_CLIENT_C_API_GRADNORM_H_
#define GRADNORM_CLIENT_C_API_GRADNORM_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define GN_API __attribute__((visibility("default")))
#else
#define GN_API
#endif

/* ---- Version ------------------------------------------------------------ */

/* Raised when a function or struct of this header changes incompatibly. */
#define GN_ABI_VERSION 2

/* The library's version, "MAJOR.MINOR.PATCH". */
GN_API const char* gn_version(void);
/* The GN_ABI_VERSION the library was built with; a caller compiled against
 * another value must not use it. */
GN_API int32_t gn_abi_version(void);

/* ---- Errors ------------------------------------------------------------- */

/* absl::StatusCode numbers. */
typedef int32_t gn_code;
enum {
  GN_OK = 0,
  GN_CANCELLED = 1,
  GN_UNKNOWN = 2,
  GN_INVALID_ARGUMENT = 3,
  GN_DEADLINE_EXCEEDED = 4,
  GN_NOT_FOUND = 5,
  GN_ALREADY_EXISTS = 6,
  GN_PERMISSION_DENIED = 7,
  GN_RESOURCE_EXHAUSTED = 8,
  GN_FAILED_PRECONDITION = 9,
  GN_ABORTED = 10,
  GN_OUT_OF_RANGE = 11,
  GN_UNIMPLEMENTED = 12,
  GN_INTERNAL = 13,
  GN_UNAVAILABLE = 14,
  GN_DATA_LOSS = 15,
  GN_UNAUTHENTICATED = 16
};

/* The message of this thread's last failed call ("" when there is none). */
GN_API const char* gn_last_error(void);
/* "OK", "INVALID_ARGUMENT", ...; "UNKNOWN" for a number outside the enum. */
GN_API const char* gn_code_name(gn_code code);
/* Frees a string the library returned through a char** (NULL is fine). */
GN_API void gn_free(void* p);

/* ---- Tensors ------------------------------------------------------------ */

enum { GN_FLOAT32 = 0, GN_BFLOAT16 = 1, GN_FLOAT16 = 2, GN_FLOAT64 = 3 };

/* gn_tensors.device values: host memory, or a CUDA device index >= 0. */
#define GN_DEVICE_CPU (-1)
/* A device that is neither (meta, xpu, mps, ...): always INVALID_ARGUMENT. */
#define GN_DEVICE_OTHER (-2)

/* gn_tensors.replication values. */
enum {
  /* A shard of its own (counted on this rank): the default. */
  GN_SHARDED = 0,
  /* Replicated across the TP ranks (layer norms, biases): counted on TP rank
   * 0 only. */
  GN_TP_REPLICATED = 1,
  /* A replica that another rank counts (e.g. a tensor replicated over a
   * dp_cp mesh dimension, at a coordinate other than 0): validated and
   * clipped here, never counted here. */
  GN_COUNTED_ELSEWHERE = 2
};

/* Views of `count` gradient tensors, as parallel arrays (a caller fills each
 * with one pass over its tensors). Element i is `numel[i]` contiguous
 * elements of `dtype[i]` at address `data[i]` on `device[i]`; all tensors of
 * one call must be on one device, and CUDA data aligned to its element size.
 * Optional arrays may be NULL: dtype (all GN_FLOAT32), device (all
 * GN_DEVICE_CPU), replication (all GN_SHARDED). */
typedef struct gn_tensors {
  size_t count;
  const uint64_t* data;
  const int64_t* numel;
  const int32_t* dtype;
  const int32_t* device;
  const uint8_t* replication;
  /* Not NULL when the caller could not describe some gradient (say, one with
   * strides that are not dense): the call fails on this rank with
   * INVALID_ARGUMENT and this message. Collective calls still join every
   * reduction first, so the other ranks fail with ABORTED instead of
   * waiting. */
  const char* error;
} gn_tensors;

/* Host threads (0: one per hardware thread) and the cudaStream_t of a call;
 * exact (1) sums a p = 1 or 2 norm with no rounding, so it is the same bits
 * for any sharding (host tensors; p = inf is exact anyway; other p:
 * INVALID_ARGUMENT; ignored by gn_scale). NULL options mean {0, NULL, 0}. */
typedef struct gn_exec_options {
  int32_t num_threads;
  void* cuda_stream;
  int32_t exact;
} gn_exec_options;

/* This rank's partial: sum |g|^p, or max |g| for p = +inf (kernels/
 * partial_norm.h ComputePartialNorm). *nonfinite is 1 when an element was NaN
 * or Inf. INVALID_ARGUMENT for a bad tensor or p; FAILED_PRECONDITION for CUDA
 * tensors where CUDA cannot run. CUDA tensors are synchronized. */
GN_API gn_code gn_partial_norm(const gn_tensors* tensors, double p,
                               const gn_exec_options* options, double* value,
                               int32_t* nonfinite);

/* Multiplies every element by coef in place, in its own dtype (ScaleInPlace).
 * INVALID_ARGUMENT for a bad tensor or a coef < 0 or not finite (nothing is
 * written). CUDA tensors: enqueued on the stream, not synchronized. */
GN_API gn_code gn_scale(const gn_tensors* tensors, double coef,
                        const gn_exec_options* options);

/* Runs the CPU kernels' work on the OpenMP runtime at `library` (a path or
 * soname) instead of gradnorm's own threads, for every later call and every
 * clipper created after it. A host that already runs an OpenMP pool (torch's
 * intra-op threads) passes its runtime, so the two pools do not compete for
 * the cores; the team has the runtime's default size on the calling thread.
 * Any runtime with libgomp's entry points works (libgomp, libomp, libiomp5).
 * NULL or "": back to gradnorm's threads. Results never depend on it.
 * NOT_FOUND when the library cannot be loaded, INVALID_ARGUMENT when it is
 * not such a runtime; the setting is unchanged then. Process-wide. */
GN_API gn_code gn_use_openmp(const char* library);

/* ---- Communicators ------------------------------------------------------ */

enum { GN_REDUCE_SUM = 0, GN_REDUCE_MAX = 1 };

/* A group of ranks the caller implements (over torch.distributed, MPI, ...).
 * Every rank of the group makes the same calls in the same order. Each
 * callback returns GN_OK, or a code after calling gn_set_callback_error with
 * what failed (DEADLINE_EXCEEDED and UNAVAILABLE for a hung or dead peer).
 * A failed callback leaves the communicator unusable: later calls fail with
 * FAILED_PRECONDITION naming the first error. */
typedef struct gn_communicator_callbacks {
  void* user_data;
  /* This process's rank in [0, size) and the group's size (>= 1). */
  int32_t rank;
  int32_t size;
  /* Replaces values[0..n) by their element-wise SUM or MAX over the group,
   * in fp64. The library never passes NaN to a MAX (it carries NaN as a
   * separate flag), so a transport whose max drops NaN is fine. */
  gn_code (*all_reduce)(void* user_data, double* values, size_t n, int32_t op);
  /* Copies rank root's values[0..n) to every rank. */
  gn_code (*broadcast)(void* user_data, double* values, size_t n, int32_t root);
  /* Copies rank root's bytes[0..n) to every rank (n is the same on all). */
  gn_code (*broadcast_bytes)(void* user_data, uint8_t* bytes, size_t n,
                             int32_t root);
  /* Returns once every rank has called it. */
  gn_code (*barrier)(void* user_data);
  /* Optional: called once by gn_communicator_destroy. */
  void (*release)(void* user_data);
} gn_communicator_callbacks;

typedef struct gn_communicator gn_communicator;

/* INVALID_ARGUMENT for a missing callback, size < 1 or rank outside [0, size).
 */
GN_API gn_code gn_communicator_create(
    const gn_communicator_callbacks* callbacks, gn_communicator** out);
GN_API void gn_communicator_destroy(gn_communicator* communicator);
/* For a callback about to return an error code: the message that goes with
 * it (copied; this thread only). */
GN_API void gn_set_callback_error(const char* message);

/* ---- GetGradNorm / ClipGradByTotalNorm (client/grad_utils.h) ------------ */

typedef struct gn_grad_norm_result {
  /* partial^(1/p), or the max for p = inf; NaN or +Inf when non-finite. */
  double total_norm;
  /* The group's reduced partial: what a job reports to the coordinator. */
  double partial;
  int32_t nonfinite;
  /* Gradient elements covered (replicas counted once). */
  uint64_t num_elements;
} gn_grad_norm_result;

/* The norm of the gradients sharded over dp_cp and tp (NULL: a group of this
 * rank alone). Every rank of both groups calls it, also with no tensors or
 * bad ones. Errors: INVALID_ARGUMENT for a bad norm_type or tensor (on the
 * rank that has it), ABORTED on the other ranks then, FAILED_PRECONDITION for
 * a non-finite total with error_if_nonfinite, the communicators' errors. */
GN_API gn_code gn_get_grad_norm(const gn_tensors* tensors,
                                gn_communicator* dp_cp, gn_communicator* tp,
                                double norm_type, int32_t error_if_nonfinite,
                                const gn_exec_options* options,
                                gn_grad_norm_result* out);

typedef struct gn_clip_result {
  /* max_norm / (total + 1e-6) when clipped, else 1. */
  double clip_coef;
  int32_t clipped;
  int32_t nonfinite;
} gn_clip_result;

/* Scales the tensors in place when total_norm is finite and
 * max_norm / (total_norm + 1e-6) < 1; otherwise writes nothing.
 * INVALID_ARGUMENT for max_norm < 0 or NaN, total_norm < 0 or a bad tensor
 * (nothing written); FAILED_PRECONDITION for a non-finite total with
 * error_if_nonfinite. */
GN_API gn_code gn_clip_grad_by_total_norm(const gn_tensors* tensors,
                                          double max_norm, double total_norm,
                                          int32_t error_if_nonfinite,
                                          const gn_exec_options* options,
                                          gn_clip_result* out);

/* ---- Coordinator client (client/coordinator_client.h) ------------------- */

enum { GN_INSECURE = 0, GN_TLS = 1, GN_MUTUAL_TLS = 2 };

typedef struct gn_client_options {
  /* "host:port" of the coordinator. */
  const char* target;
  int32_t security;
  /* PEM strings; NULL or "" where not used. */
  const char* root_certs_pem;
  const char* client_cert_pem;
  const char* client_key_pem;
  /* The name the server certificate must carry when it differs from the
   * target's host. */
  const char* tls_server_name;
  /* Sent as "authorization: Bearer <token>" when not empty. */
  const char* bearer_token;
} gn_client_options;

typedef struct gn_coordinator_client gn_coordinator_client;

/* INVALID_ARGUMENT for an empty target, an unknown security value, or mutual
 * TLS without a certificate and key. Connects lazily. */
GN_API gn_code gn_coordinator_client_create(const gn_client_options* options,
                                            gn_coordinator_client** out);
GN_API void gn_coordinator_client_destroy(gn_coordinator_client* client);

/* One call of the coordinator's gradnorm.v1.Coordinator service, request and
 * response in the proto3 JSON mapping (proto field names, every field
 * present in the response). `method` is one of RegisterRun, GetRun,
 * ListRuns, GetHistory, GetSummary, FinishRun, DeleteRun. Retried on
 * UNAVAILABLE until the deadline, `timeout_s` seconds from now (> 0).
 * *response_json is set on success; free it with gn_free. Errors:
 * INVALID_ARGUMENT for an unknown method, a request that does not parse as that
 * method's request message, or timeout_s <= 0; otherwise the coordinator's code
 * and message (see proto/gradnorm/v1/coordinator.proto) or DEADLINE_EXCEEDED.
 */
GN_API gn_code gn_coordinator_client_call(gn_coordinator_client* client,
                                          const char* method,
                                          const char* request_json,
                                          double timeout_s,
                                          char** response_json);

/* ---- GradNormClipper (client/grad_norm_clipper.h) ----------------------- */

typedef struct gn_clipper_options {
  /* p (> 0, or +inf); with a coordinator, the run's norm_type. */
  double norm_type;
  /* The threshold without a coordinator (>= 0). */
  double max_norm;
  /* A non-finite norm fails the step with FAILED_PRECONDITION. */
  int32_t error_if_nonfinite;
  /* Host threads of the kernels (0: one per hardware thread). */
  int32_t num_threads;
  /* 1: exact partials (as gn_exec_options.exact), sent whole to the
   * coordinator, whose total is then the same bits for any job split. A run
   * that requires them (RunConfig.inexact false, p = 1 or 2) gets them even
   * with 0. */
  int32_t exact;
} gn_clipper_options;

/* Where and as whom a job reports to the coordinator. Every rank of the job
 * passes one (or every rank none); the client and run_config_json are read
 * on the job's leader (rank 0 of the job communicator) only. */
typedef struct gn_coordinator_binding {
  /* Needed on the leader; may be NULL elsewhere. Must outlive the clipper. */
  gn_coordinator_client* client;
  const char* run_id;
  /* This job's index in [0, participants). */
  uint32_t participant;
  /* A gradnorm.v1.RunConfig in proto3 JSON (every policy: clip_policy,
   * spike_rule, nonfinite_policy, round_timeout_ms, ...): the leader
   * registers the run with it (a no-op when it exists with the same config).
   * NULL or "": the run must already exist. */
  const char* run_config_json;
  /* Deadline of each report, seconds (> 0; 0 means 120). */
  double report_timeout_s;
  /* How often the waiting leader tells the job's ranks it still waits,
   * seconds (> 0; 0 means 10). Keep it below the job group's timeout. */
  double progress_interval_s;
} gn_coordinator_binding;

typedef struct gn_clipper gn_clipper;

/* Every rank of the job calls it together. dp_cp, tp and job may be NULL (a
 * group of this rank alone) and must outlive the clipper. Errors: those of
 * GradNormClipper::Create, the same on every rank, including INVALID_ARGUMENT
 * when the leader's run_config_json does not parse as a RunConfig (the other
 * ranks do not read theirs). */
GN_API gn_code gn_clipper_create(gn_communicator* dp_cp, gn_communicator* tp,
                                 gn_communicator* job,
                                 const gn_clipper_options* options,
                                 const gn_coordinator_binding* coordinator,
                                 gn_clipper** out);
GN_API void gn_clipper_destroy(gn_clipper* clipper);

/* gn_step_result.action (gradnorm.v1.Action) and .reason (gradnorm.v1.Reason).
 */
enum { GN_ACTION_NONE = 1, GN_ACTION_CLIP = 2, GN_ACTION_SKIP = 3 };
enum {
  GN_REASON_WITHIN_MAX_NORM = 1,
  GN_REASON_ABOVE_MAX_NORM = 2,
  GN_REASON_NONFINITE = 3,
  GN_REASON_SPIKE = 4
};

typedef struct gn_step_result {
  double total_norm;
  /* < 1 when the action is CLIP, else 1. */
  double clip_coef;
  int32_t action;
  int32_t reason;
  double effective_max_norm;
  int32_t nonfinite;
  /* The job's partial as reported. */
  double job_partial;
  /* With a coordinator: the participant that reported last and the seconds
   * between the round's first and last report. */
  uint32_t slowest_participant;
  double arrival_spread_seconds;
  /* Why, in words; owned by the clipper, valid until its next step. */
  const char* reason_detail;
  /* 1 when total_norm was summed from exact partials (the same bits for any
   * layout). Added in ABI version 2. */
  int32_t exact;
} gn_step_result;

/* One training step on every rank of the job: the norm, the decision, and
 * the in-place clip unless the action is SKIP (GradNormClipper::Step), with
 * the kernels on cuda_stream (a cudaStream_t; NULL: the legacy default
 * stream) and the clipper's num_threads. Errors are the same on every rank
 * of the job. */
GN_API gn_code gn_clipper_step(gn_clipper* clipper, uint64_t step,
                               const gn_tensors* tensors, void* cuda_stream,
                               gn_step_result* out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* GRADNORM_CLIENT_C_API_GRADNORM_H_ */
