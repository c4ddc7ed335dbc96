#include "ops.h"

long op_clamp(long a, long b)
{
    return a < 0 ? 0 : (a > b ? b : a);
}
