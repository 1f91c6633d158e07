#include "fedgate_system.h"
