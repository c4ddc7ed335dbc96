#include "ops.h"

long op_gcd(long a, long b)
{
    while (b) { long t = a % b; a = b; b = t; } return a;
}
