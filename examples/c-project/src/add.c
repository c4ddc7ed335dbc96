#include "ops.h"

long op_add(long a, long b)
{
    return a + b;
}
