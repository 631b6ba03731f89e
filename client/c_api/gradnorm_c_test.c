/* The C ABI from C: compiled by a C compiler against gradnorm.h alone and
 * linked with libgradnorm.so. The seed vectors, errors and the version. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "client/c_api/gradnorm.h"

static int failures = 0;

#define CHECK(cond)                                                           \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, \
              __LINE__, #cond, gn_last_error());                              \
      failures++;                                                             \
    }                                                                         \
  } while (0)

static gn_tensors two_fp32(float* a, float* b) {
  static uint64_t data[2];
  static int64_t numel[2];
  gn_tensors t;
  memset(&t, 0, sizeof(t));
  data[0] = (uint64_t)(uintptr_t)a;
  data[1] = (uint64_t)(uintptr_t)b;
  numel[0] = 2;
  numel[1] = 2;
  t.count = 2;
  t.data = data;
  t.numel = numel;
  return t;
}

static void test_version(void) {
  CHECK(gn_abi_version() == GN_ABI_VERSION);
  CHECK(strlen(gn_version()) >= 5);
  CHECK(strcmp(gn_code_name(GN_INVALID_ARGUMENT), "INVALID_ARGUMENT") == 0);
  CHECK(strcmp(gn_code_name(99), "UNKNOWN") == 0);
}

/* grads {[3,4],[1,2]}: p=2 -> sqrt(30), p=1 -> 10, p=3 -> 4.6415..., and the
 * clip (max 1, total 5) -> x0.19999996. */
static void test_seed_vectors(void) {
  float a[2] = {3, 4}, b[2] = {1, 2};
  gn_tensors t = two_fp32(a, b);
  gn_grad_norm_result norm;
  CHECK(gn_get_grad_norm(&t, NULL, NULL, 2.0, 0, NULL, &norm) == GN_OK);
  CHECK(norm.total_norm == 5.477225575051661);
  CHECK(norm.partial == 30.0);
  CHECK(norm.num_elements == 4);
  CHECK(gn_get_grad_norm(&t, NULL, NULL, 1.0, 0, NULL, &norm) == GN_OK);
  CHECK(norm.total_norm == 10.0);
  CHECK(gn_get_grad_norm(&t, NULL, NULL, 3.0, 0, NULL, &norm) == GN_OK);
  CHECK(fabs(norm.total_norm - 4.641588833612778) < 1e-15);
  CHECK(gn_get_grad_norm(&t, NULL, NULL, INFINITY, 0, NULL, &norm) == GN_OK);
  CHECK(norm.total_norm == 4.0);

  double value = 0;
  int32_t nonfinite = 1;
  CHECK(gn_partial_norm(&t, 2.0, NULL, &value, &nonfinite) == GN_OK);
  CHECK(value == 30.0 && nonfinite == 0);

  gn_clip_result clip;
  float c[2] = {3, 4};
  gn_tensors one = two_fp32(c, c);
  one.count = 1;
  CHECK(gn_clip_grad_by_total_norm(&one, 1.0, 5.0, 0, NULL, &clip) == GN_OK);
  CHECK(clip.clipped == 1);
  CHECK(fabs(clip.clip_coef - 1.0 / 5.000001) < 1e-15);
  CHECK(c[0] == (float)(3.0f * (float)(1.0 / 5.000001)));
  CHECK(gn_clip_grad_by_total_norm(&one, 10.0, 5.0, 0, NULL, &clip) == GN_OK);
  CHECK(clip.clipped == 0 && clip.clip_coef == 1.0);
}

static void test_errors(void) {
  float a[2] = {3, 4}, b[2] = {1, 2};
  gn_tensors t = two_fp32(a, b);
  gn_grad_norm_result norm;
  CHECK(gn_get_grad_norm(&t, NULL, NULL, -1.0, 0, NULL, &norm) ==
        GN_INVALID_ARGUMENT);
  CHECK(
      strcmp(
          gn_last_error(),
          "norm_type -1 is invalid: expected p > 0 (a finite value or +inf)") ==
      0);
  /* A success clears the message. */
  CHECK(gn_get_grad_norm(&t, NULL, NULL, 2.0, 0, NULL, &norm) == GN_OK);
  CHECK(strcmp(gn_last_error(), "") == 0);

  int32_t dtypes[2] = {0, 7};
  t.dtype = dtypes;
  CHECK(gn_get_grad_norm(&t, NULL, NULL, 2.0, 0, NULL, &norm) ==
        GN_INVALID_ARGUMENT);
  CHECK(strstr(gn_last_error(), "tensors[1]: unknown dtype 7") != NULL);
  t.dtype = NULL;

  int32_t devices[2] = {GN_DEVICE_CPU, GN_DEVICE_OTHER};
  t.device = devices;
  CHECK(gn_scale(&t, 0.5, NULL) == GN_INVALID_ARGUMENT);
  CHECK(strstr(gn_last_error(), "tensors[1] is on device -2") != NULL);
  CHECK(a[0] == 3.0f); /* nothing written */
  t.device = NULL;

  t.error = "parameter 4's gradient is not dense";
  gn_clip_result clip;
  CHECK(gn_clip_grad_by_total_norm(&t, 1.0, 5.0, 0, NULL, &clip) ==
        GN_INVALID_ARGUMENT);
  CHECK(strcmp(gn_last_error(), "parameter 4's gradient is not dense") == 0);
  CHECK(a[0] == 3.0f);
  t.error = NULL;

  CHECK(gn_clip_grad_by_total_norm(&t, -1.0, 5.0, 0, NULL, &clip) ==
        GN_INVALID_ARGUMENT);
  CHECK(gn_get_grad_norm(NULL, NULL, NULL, 2.0, 0, NULL, &norm) ==
        GN_INVALID_ARGUMENT);

  gn_client_options options;
  memset(&options, 0, sizeof(options));
  gn_coordinator_client* client = NULL;
  CHECK(gn_coordinator_client_create(&options, &client) == GN_INVALID_ARGUMENT);
  CHECK(client == NULL);
  gn_coordinator_client_destroy(NULL);
  gn_clipper_destroy(NULL);
  gn_communicator_destroy(NULL);
  gn_free(NULL);
}

int main(void) {
  test_version();
  test_seed_vectors();
  test_errors();
  if (failures != 0) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("gradnorm C ABI %s: all checks passed\n", gn_version());
  return 0;
}
