#include <stdio.h>
#include "ops.h"

int main(void)
{
    printf("calc %s\n", CALC_VERSION);
    printf("%-6s %ld\n", "add", op_add(12, 8));
    printf("%-6s %ld\n", "sub", op_sub(12, 8));
    printf("%-6s %ld\n", "mul", op_mul(12, 8));
    printf("%-6s %ld\n", "div", op_div(12, 8));
    printf("%-6s %ld\n", "mod", op_mod(12, 8));
    printf("%-6s %ld\n", "min", op_min(12, 8));
    printf("%-6s %ld\n", "max", op_max(12, 8));
    printf("%-6s %ld\n", "abs", op_abs(12, 8));
    printf("%-6s %ld\n", "neg", op_neg(12, 8));
    printf("%-6s %ld\n", "sq", op_sq(12, 8));
    printf("%-6s %ld\n", "cube", op_cube(12, 8));
    printf("%-6s %ld\n", "gcd", op_gcd(12, 8));
    printf("%-6s %ld\n", "lcm", op_lcm(12, 8));
    printf("%-6s %ld\n", "fib", op_fib(12, 8));
    printf("%-6s %ld\n", "fact", op_fact(12, 8));
    printf("%-6s %ld\n", "pow2", op_pow2(12, 8));
    printf("%-6s %ld\n", "clamp", op_clamp(12, 8));
    printf("%-6s %ld\n", "avg", op_avg(12, 8));
    printf("%-6s %ld\n", "sign", op_sign(12, 8));
    printf("%-6s %ld\n", "bits", op_bits(12, 8));
    return 0;
}
