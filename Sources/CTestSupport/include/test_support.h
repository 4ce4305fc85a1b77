#ifndef TOPIARY_TEST_SUPPORT_H
#define TOPIARY_TEST_SUPPORT_H
/// Linked into the test binaries: a constructor applies `tp_blas_select` before any test runs.
int tp_test_support_linked(void);
#endif
