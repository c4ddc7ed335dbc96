#include "ops.h"

long op_neg(long a, long b)
{
    (void)b; return -a;
}
