package caddymodule

import (
	"fmt"
	"time"
)

// temporary until spend.NextReset lands
var spendNextReset = func(from time.Time, d string) (time.Time, error) {
	switch d {
	case "1s":
		return from.Add(time.Second), nil
	case "30d":
		return from.AddDate(0, 0, 30), nil
	}
	return time.Time{}, fmt.Errorf("invalid duration %q", d)
}
