package sqlcodec

import (
	"fmt"

	"github.com/llmspend/llmspend/store"
)

// Wrap prefixes a non-nil err with the driver name and a message. When
// unique (the driver's own test for a UNIQUE or PRIMARY KEY violation)
// holds, the result matches store.ErrConflict instead, the driver's error
// kept in the text.
func Wrap(driver string, unique bool, err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf(format, args...)
	if unique {
		return fmt.Errorf("%s: %s: %w (%v)", driver, msg, store.ErrConflict, err)
	}
	return fmt.Errorf("%s: %s: %w", driver, msg, err)
}

// NotFound is "driver: message: " + store.ErrNotFound.
func NotFound(driver, format string, args ...any) error {
	return fmt.Errorf(driver+": "+format+": %w", append(args, store.ErrNotFound)...)
}

// Conflict is "driver: message: " + store.ErrConflict.
func Conflict(driver, format string, args ...any) error {
	return fmt.Errorf(driver+": "+format+": %w", append(args, store.ErrConflict)...)
}
