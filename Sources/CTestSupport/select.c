#include "test_support.h"
#include "platform.h"

// Test binaries run under the same OpenBLAS core choice as `topiary`: before any test starts,
// the same policy runs (glibc passes argc, argv and envp to ELF constructors).
__attribute__((constructor)) static void topiary_tests_select_blas_core(int argc, char **argv, char **envp) {
    (void)argc; (void)envp;
    tp_blas_select(argv);
}

int tp_test_support_linked(void) { return 1; }
