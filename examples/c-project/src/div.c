#include "ops.h"

long op_div(long a, long b)
{
    return b ? a / b : 0;
}
