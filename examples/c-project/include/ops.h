#ifndef OPS_H
#define OPS_H
#include "config.h"
long op_add(long a, long b);
long op_sub(long a, long b);
long op_mul(long a, long b);
long op_div(long a, long b);
long op_mod(long a, long b);
long op_min(long a, long b);
long op_max(long a, long b);
long op_abs(long a, long b);
long op_neg(long a, long b);
long op_sq(long a, long b);
long op_cube(long a, long b);
long op_gcd(long a, long b);
long op_lcm(long a, long b);
long op_fib(long a, long b);
long op_fact(long a, long b);
long op_pow2(long a, long b);
long op_clamp(long a, long b);
long op_avg(long a, long b);
long op_sign(long a, long b);
long op_bits(long a, long b);
#endif
