/* Nothing here: the target exists for CFuzzer.h. */
