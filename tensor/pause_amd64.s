//go:build amd64 && !purego

#include "textflag.h"

// func spinPause()
// PAUSE tells the core that this is a spin-wait loop: it saves power
// and lets the other hardware thread of the core run.
TEXT ·spinPause(SB), NOSPLIT, $0-0
	PAUSE
	RET
