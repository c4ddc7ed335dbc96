#include "ops.h"

long op_avg(long a, long b)
{
    return (a + b) / 2;
}
