#include "ops.h"

long op_min(long a, long b)
{
    return a < b ? a : b;
}
