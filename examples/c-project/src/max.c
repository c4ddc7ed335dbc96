#include "ops.h"

long op_max(long a, long b)
{
    return a > b ? a : b;
}
