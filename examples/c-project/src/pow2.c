#include "ops.h"

long op_pow2(long a, long b)
{
    (void)b; return 1L << (a & 62);
}
