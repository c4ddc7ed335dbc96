#ifndef CONFIG_H
#define CONFIG_H
#define CALC_VERSION "1.0"
#endif
