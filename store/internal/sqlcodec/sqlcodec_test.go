package sqlcodec

import (
	"strconv"
	"strings"
	"testing"
)

func TestDollar(t *testing.T) {
	for in, want := range map[string]string{
		"":                             "",
		"SELECT 1":                     "SELECT 1",
		"a = ? AND b = ?":              "a = $1 AND b = $2",
		"VALUES (?,?,?,?,?,?,?,?,?,?)": "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
	} {
		if got := Dollar(in); got != want {
			t.Errorf("Dollar(%q) = %q, want %q", in, got, want)
		}
	}
	// Every shared statement keeps its placeholder count.
	for _, q := range []string{InsertUserSQL, UpdateUserSQL, InsertKeySQL, UpdateKeySQL, RegenerateKeySQL,
		DailySQL, EnqueueSQL, InsertInvitationSQL} {
		n := strings.Count(q, "?")
		d := Dollar(q)
		if strings.Contains(d, "?") || !strings.Contains(d, "$"+itoa(n)) || strings.Contains(d, "$"+itoa(n+1)) {
			t.Errorf("Dollar(%q) = %q: want $1..$%d", q, d, n)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestFlag(t *testing.T) {
	for _, c := range []struct {
		src  any
		want Flag
	}{{true, true}, {false, false}, {int64(1), true}, {int64(0), false}, {int64(2), true}} {
		var f Flag = !c.want
		if err := f.Scan(c.src); err != nil || f != c.want {
			t.Errorf("Scan(%v) = %v, %v; want %v", c.src, f, err, c.want)
		}
	}
	var f Flag
	if err := f.Scan("1"); err == nil {
		t.Error("Scan(string) succeeded")
	}
}

func TestJSONNilAndEmpty(t *testing.T) {
	for _, l := range [][]string{nil, {}, {"a", "b"}} {
		enc, err := JSONList(l)
		if err != nil {
			t.Fatal(err)
		}
		var b []byte
		if enc != nil {
			b = []byte(enc.(string))
		}
		got, err := FromJSONList(b)
		if err != nil || (got == nil) != (l == nil) || len(got) != len(l) {
			t.Errorf("list %#v round-tripped to %#v, %v", l, got, err)
		}
	}
	for _, m := range []map[string]any{nil, {}, {"k": "v"}} {
		enc, err := JSONMap(m)
		if err != nil {
			t.Fatal(err)
		}
		var b []byte
		if enc != nil {
			b = []byte(enc.(string))
		}
		got, err := FromJSONMap(b)
		if err != nil || (got == nil) != (m == nil) || len(got) != len(m) {
			t.Errorf("map %#v round-tripped to %#v, %v", m, got, err)
		}
	}
	if _, err := JSONMap(map[string]any{"f": func() {}}); err == nil {
		t.Error("JSONMap encoded a func")
	}
}
