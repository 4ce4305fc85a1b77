#ifndef TOPIARY_CGLPK_SHIM_H
#define TOPIARY_CGLPK_SHIM_H
#include <glpk.h>
#endif
