#include "ops.h"

long op_mul(long a, long b)
{
    return a * b;
}
