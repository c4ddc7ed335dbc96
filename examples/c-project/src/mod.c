#include "ops.h"

long op_mod(long a, long b)
{
    return b ? a % b : 0;
}
