#include <stddef.h>
#include <stdint.h>

/* libFuzzer's driver (LLVM 11 and later): the fuzz targets' entry point hands it their callback. */
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
