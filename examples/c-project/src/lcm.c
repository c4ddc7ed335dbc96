#include "ops.h"

long op_lcm(long a, long b)
{
    long g = op_gcd(a, b); return g ? a / g * b : 0;
}
