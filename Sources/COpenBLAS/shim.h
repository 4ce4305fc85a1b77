#ifndef TOPIARY_COPENBLAS_SHIM_H
#define TOPIARY_COPENBLAS_SHIM_H
#include <cblas.h>
#endif
