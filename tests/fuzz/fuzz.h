/* The libFuzzer entry point every target defines (replay_main.c calls it
 * without libFuzzer). */
#ifndef SHAHIDI_FUZZ_H
#define SHAHIDI_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Optional: after a replay (replay_main.c), a target may check what the
 * corpus reached; non-zero fails the replay. */
int fuzz_replay_check(void) __attribute__((weak));

#endif
