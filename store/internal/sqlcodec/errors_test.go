package sqlcodec

import (
	"errors"
	"testing"

	"github.com/llmspend/llmspend/store"
)

func TestErrors(t *testing.T) {
	if Wrap("d", true, nil, "x") != nil {
		t.Error("Wrap(nil) is not nil")
	}
	cause := errors.New("boom")
	err := Wrap("d", false, cause, "get %s", "k")
	if !errors.Is(err, cause) || errors.Is(err, store.ErrConflict) || err.Error() != "d: get k: boom" {
		t.Errorf("Wrap = %v", err)
	}
	err = Wrap("d", true, cause, "create %s", "k")
	if !errors.Is(err, store.ErrConflict) || errors.Is(err, cause) || err.Error() != "d: create k: "+store.ErrConflict.Error()+" (boom)" {
		t.Errorf("Wrap unique = %v", err)
	}
	if err := NotFound("d", "key %s", "k"); !errors.Is(err, store.ErrNotFound) || err.Error() != "d: key k: "+store.ErrNotFound.Error() {
		t.Errorf("NotFound = %v", err)
	}
	if err := Conflict("d", "accept %d", 1); !errors.Is(err, store.ErrConflict) || err.Error() != "d: accept 1: "+store.ErrConflict.Error() {
		t.Errorf("Conflict = %v", err)
	}
}
