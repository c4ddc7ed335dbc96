#include "ops.h"

long op_bits(long a, long b)
{
    (void)b; long n = 0; unsigned long u = (unsigned long)a; while (u) { n += u & 1; u >>= 1; } return n;
}
