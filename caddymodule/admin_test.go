package caddymodule

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestAdminRefusesWrongOrEmptyMasterKey(t *testing.T) {
	g := newGateway(t, "")
	for _, h := range []map[string]string{nil, bearer("wrong-master-key"), bearer(testMasterKey + "x"), {"Authorization": "Bearer "}} {
		r := g.do("POST", "/key/generate", h, `{}`)
		if e := errorBody(t, r); r.Status != 401 || e.Type != "auth_error" {
			t.Fatalf("headers %v: %d %+v", h, r.Status, e)
		}
	}
	// A virtual key is not a master key.
	k := g.newKey(nil)
	if r := g.do("GET", "/key/list", bearer(k), nil); r.Status != 401 {
		t.Fatalf("virtual key accepted as master: %d", r.Status)
	}
	if out := g.mustAdmin("GET", "/key/list", nil); out["total_count"].(float64) != 1 {
		t.Fatalf("refused calls changed the store: %v", out)
	}

	// With no master key configured every admin call is refused, and says why.
	g.extra = ""
	cf := strings.Replace(g.caddyfile(), "master_key "+testMasterKey, "master_key", 1)
	g.loadText(cf)
	r := g.do("GET", "/key/list", bearer(testMasterKey), nil)
	if e := errorBody(t, r); r.Status != 401 || !strings.Contains(e.Message, "MASTER_KEY is not set") {
		t.Fatalf("empty master key: %d %+v", r.Status, e)
	}
	// Liveliness stays open for probes.
	if r := g.do("GET", "/health/liveliness", nil, nil); r.Status != 200 || !strings.Contains(string(r.Body), "alive") {
		t.Fatalf("liveliness: %d %s", r.Status, r.Body)
	}
}

func TestRegenerateInvalidatesOldKeyAtOnce(t *testing.T) {
	g := newGateway(t, "")
	g.mustAdmin("POST", "/user/new", map[string]any{"user_id": "u1", "user_email": "u1@example.com", "auto_create_key": false})
	old := g.newKey(map[string]any{"user_id": "u1", "key_alias": "svc", "max_budget": 5.5, "models": []string{"gpt-4o-mini"}})
	if r := g.chat(old, "gpt-4o-mini"); r.Status != 200 {
		t.Fatalf("old key before: %d", r.Status)
	}

	out := g.mustAdmin("POST", "/key/regenerate", map[string]any{"key": old})
	k1 := out["key"].(string)
	if k1 == old || !strings.HasPrefix(k1, "sk-") {
		t.Fatalf("new key %q", k1)
	}
	if out["key_alias"] != "svc" || out["max_budget"].(float64) != 5.5 || out["user_id"] != "u1" {
		t.Fatalf("fields did not carry over: %v", out)
	}
	if r := g.chat(old, "gpt-4o-mini"); r.Status != 401 {
		t.Fatalf("old key still works: %d", r.Status)
	}
	if r := g.chat(k1, "gpt-4o-mini"); r.Status != 200 {
		t.Fatalf("new key: %d %s", r.Status, r.Body)
	}

	// Path form, addressing the key by its hashed token.
	info := g.mustAdmin("GET", "/key/info?key="+k1, nil)
	token := info["info"].(map[string]any)["token"].(string)
	out = g.mustAdmin("POST", "/key/"+token+"/regenerate", nil)
	k2 := out["key"].(string)
	if r := g.chat(k1, "gpt-4o-mini"); r.Status != 401 {
		t.Fatalf("k1 still works after path regenerate: %d", r.Status)
	}
	if r := g.chat(k2, "gpt-4o-mini"); r.Status != 200 {
		t.Fatalf("k2: %d", r.Status)
	}
	// Unknown key: 404 not_found_error.
	r := g.admin("POST", "/key/regenerate", map[string]any{"key": "sk-nope-nope-nope-nope-nope"})
	if e := errorBody(t, r); r.Status != 404 || e.Type != "not_found_error" {
		t.Fatalf("unknown: %d %+v", r.Status, e)
	}
}

func TestKeysSurviveRestartAndReload(t *testing.T) {
	g := newGateway(t, "")
	key := g.newKey(map[string]any{"key_alias": "persist"})
	g.load() // caddy reload
	if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
		t.Fatalf("after reload: %d %s", r.Status, r.Body)
	}
	g.restart() // full stop: store closed and reopened from the same file
	if r := g.chat(key, "gpt-4o-mini"); r.Status != 200 {
		t.Fatalf("after restart: %d %s", r.Status, r.Body)
	}
	info := g.mustAdmin("GET", "/key/info?key="+key, nil)
	if info["info"].(map[string]any)["key_alias"] != "persist" {
		t.Fatalf("info after restart: %v", info)
	}
}

func TestAdminCRUD(t *testing.T) {
	g := newGateway(t, "")
	u := g.mustAdmin("POST", "/user/new", map[string]any{"user_email": "ada@example.com", "max_budget": 10, "budget_duration": "30d", "send_invite_email": false})
	uid := u["user_id"].(string)
	ukey, _ := u["key"].(string)
	if uid == "" || !strings.HasPrefix(ukey, "sk-") || u["max_budget"].(float64) != 10 || u["budget_reset_at"] == nil {
		t.Fatalf("user/new: %v", u)
	}
	if r := g.chat(ukey, "gpt-4o-mini"); r.Status != 200 {
		t.Fatalf("auto-created key: %d", r.Status)
	}
	k := g.newKey(map[string]any{"user_id": uid, "key_alias": "second", "soft_budget": 1.25, "metadata": map[string]any{"team": "x"}})

	ui := g.mustAdmin("GET", "/user/info?user_id="+uid, nil)
	info := ui["user_info"].(map[string]any)
	if info["user_email"] != "ada@example.com" || len(ui["keys"].([]any)) != 2 {
		t.Fatalf("user/info: %v", ui)
	}

	up := g.mustAdmin("POST", "/key/update", map[string]any{"key": k, "key_alias": "renamed", "max_budget": 3, "soft_budget": nil, "blocked": true})
	if up["key_alias"] != "renamed" || up["max_budget"].(float64) != 3 || up["soft_budget"] != nil || up["blocked"] != true {
		t.Fatalf("update: %v", up)
	}
	if up["metadata"].(map[string]any)["team"] != "x" {
		t.Fatalf("update dropped an absent field: %v", up)
	}
	if r := g.chat(k, "gpt-4o-mini"); r.Status != 401 {
		t.Fatalf("blocked via update still works: %d", r.Status)
	}

	list := g.mustAdmin("GET", "/key/list?user_id="+uid, nil)
	if list["total_count"].(float64) != 2 {
		t.Fatalf("list: %v", list)
	}
	full := g.mustAdmin("GET", "/key/list?return_full_object=true&size=1&page=2", nil)
	if len(full["keys"].([]any)) != 1 || full["total_pages"].(float64) != 2 {
		t.Fatalf("paged list: %v", full)
	}

	del := g.mustAdmin("POST", "/key/delete", map[string]any{"keys": []string{k}})
	if len(del["deleted_keys"].([]any)) != 1 {
		t.Fatalf("delete: %v", del)
	}
	if r := g.chat(k, "gpt-4o-mini"); r.Status != 401 {
		t.Fatalf("deleted key works: %d", r.Status)
	}
	if r := g.admin("GET", "/key/info?key="+k, nil); r.Status != 404 || errorBody(t, r).Type != "not_found_error" {
		t.Fatalf("info of deleted key: %d %s", r.Status, r.Body)
	}
}

func TestAdminBadInputLeavesStoreUnchanged(t *testing.T) {
	g := newGateway(t, "admin_max_body 4096")
	g.mustAdmin("POST", "/user/new", map[string]any{"user_id": "u1", "auto_create_key": false})
	existing := g.newKey(map[string]any{"key_alias": "keep"})

	cases := []struct {
		name, path string
		body       any
		status     int
		param      string
		msgHas     string
	}{
		{"malformed json", "/key/generate", `{"key_alias": "x",`, 400, "", "malformed JSON"},
		{"wrong type", "/key/generate", `{"max_budget": "ten"}`, 400, "max_budget", "max_budget"},
		{"wrong type models", "/key/generate", `{"models": "gpt-4o"}`, 400, "models", "models"},
		{"negative budget", "/key/generate", `{"max_budget": -1}`, 400, "max_budget", "negative"},
		{"bad duration", "/key/generate", `{"budget_duration": "fortnight"}`, 400, "budget_duration", "budget_duration"},
		{"unknown user", "/key/generate", `{"user_id": "ghost"}`, 400, "user_id", "does not exist"},
		{"bad custom key", "/key/generate", `{"key": "abc"}`, 400, "key", "sk-"},
		{"user wrong type", "/user/new", `{"user_email": 42}`, 400, "user_email", "user_email"},
		{"user bad email", "/user/new", `{"user_email": "not an email"}`, 400, "user_email", "email"},
		{"duplicate user", "/user/new", `{"user_id": "u1"}`, 409, "user_id", "already exists"},
		{"update unknown key", "/key/update", `{"key": "sk-unknown-unknown-unknown", "key_alias": "x"}`, 404, "", "not found"},
		{"update wrong type", "/key/update", map[string]any{"key": existing, "max_budget": "x"}, 400, "max_budget", "max_budget"},
		{"delete unknown", "/key/delete", map[string]any{"keys": []string{existing, "sk-unknown-unknown-unknown"}}, 404, "keys", "nothing was deleted"},
		{"delete empty", "/key/delete", `{"keys": []}`, 400, "keys", "at least one"},
		{"over limit", "/key/generate", `{"key_alias": "` + strings.Repeat("a", 5000) + `"}`, 413, "", "limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := g.admin("POST", c.path, c.body)
			if r.Status != c.status {
				t.Fatalf("status %d, want %d: %s", r.Status, c.status, r.Body)
			}
			e := errorBody(t, r)
			if e.Code != strconv.Itoa(c.status) {
				t.Errorf("code %q", e.Code)
			}
			if !strings.Contains(e.Message, c.msgHas) {
				t.Errorf("message %q lacks %q", e.Message, c.msgHas)
			}
			if c.param != "" && (e.Param == nil || *e.Param != c.param) {
				t.Errorf("param = %v, want %q", e.Param, c.param)
			}
		})
	}
	list := g.mustAdmin("GET", "/key/list?return_full_object=true", nil)
	keys := list["keys"].([]any)
	if len(keys) != 1 || keys[0].(map[string]any)["key_alias"] != "keep" {
		t.Fatalf("store changed by bad input: %v", list)
	}
	if r := g.chat(existing, "gpt-4o-mini"); r.Status != 200 {
		t.Fatalf("existing key broken: %d", r.Status)
	}
	if r := g.admin("GET", "/user/info?user_id=nobody", nil); r.Status != 404 {
		t.Fatalf("unknown user: %d", r.Status)
	}
}

// Master-key guessing is limited per client, for the admin API and the UI
// sign-in alike.
func TestMasterKeyGuessingIsLimited(t *testing.T) {
	g := newGateway(t, "")
	for i := 0; i < maxAuthFailures; i++ {
		if r := g.do("GET", "/key/list", bearer(fmt.Sprintf("wrong-%d", i)), nil); r.Status != 401 {
			t.Fatalf("attempt %d: %d", i, r.Status)
		}
	}
	// Now even the right key is refused from this client, and the UI too.
	r := g.admin("GET", "/key/list", nil)
	if e := errorBody(t, r); r.Status != 429 || e.Type != "rate_limit_error" {
		t.Fatalf("after %d failures: %d %+v", maxAuthFailures, r.Status, e)
	}
	r = g.form("/ui/login", url.Values{"master_key": {testMasterKey}}, map[string]string{"Sec-Fetch-Site": "same-origin"})
	if r.Status != http.StatusTooManyRequests || len(r.Header.Values("Set-Cookie")) != 0 {
		t.Fatalf("UI sign-in while limited: %d", r.Status)
	}
}

func TestAuthLimiterWindow(t *testing.T) {
	var l authLimiter
	t0 := time.Unix(1_800_000_000, 0)
	for i := 0; i < maxAuthFailures-1; i++ {
		l.fail("10.0.0.1", t0)
	}
	if l.blocked("10.0.0.1", t0) {
		t.Fatal("blocked before the limit")
	}
	l.fail("10.0.0.1", t0)
	if !l.blocked("10.0.0.1", t0.Add(authFailureWindow-time.Second)) {
		t.Fatal("not blocked at the limit")
	}
	if l.blocked("10.0.0.2", t0) {
		t.Fatal("another client blocked")
	}
	if l.blocked("10.0.0.1", t0.Add(authFailureWindow)) {
		t.Fatal("still blocked after the window")
	}
}
