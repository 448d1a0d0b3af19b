package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseBytes(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"4GiB", 4 << 30}, {"4G", 4 << 30}, {"512MiB", 512 << 20}, {"1.5GiB", 3 << 29},
		{"2GB", 2e9}, {"1000", 1000}, {"64 kib", 64 << 10}, {"0", -1}, {"-1G", -1}, {"4XB", -1}, {"", -1}, {"G", -1}, {"1e30", -1},
	} {
		got, err := parseBytes(c.in)
		if c.want < 0 {
			if err == nil {
				t.Errorf("parseBytes(%q) = %d, want an error", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
}

func TestServeRefuses(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"serve", "--mem", "lots"}, exitUsage, "--mem"},
		{[]string{"serve", "--parallel", "0"}, exitUsage, "--parallel"},
		{[]string{"serve", "--kv", "nope"}, exitUsage, "nope"},
		// The listener opens, the model loads, and the budget cannot hold it.
		{[]string{"serve", "--mem", "8MiB", "--addr", "127.0.0.1:0"}, exitUsage, "does not hold the weights"},
	} {
		var out, errb bytes.Buffer
		if code := run(c.args, &out, &errb); code != c.code || !strings.Contains(errb.String(), c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, errb.String(), c.code, c.msg)
		}
	}
}
