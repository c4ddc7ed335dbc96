#include "ops.h"

long op_sub(long a, long b)
{
    return a - b;
}
