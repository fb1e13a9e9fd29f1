package main

import (
	"strings"
	"testing"
	"time"
)

// The bus's Redis URL takes TLS and a password; its key defaults to one
// derived from the database and the slot; the intervals have defaults and
// bad values name their key.
func TestConfigBus(t *testing.T) {
	path := writeFile(t, minimal+"slot: shop_slot\nbus:\n  redis_url: rediss://app:s3cret@redis.example.com:6380/2\n  role: serve\n")
	c, err := loadConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.redisOptions()
	if err != nil {
		t.Fatal(err)
	}
	if o.TLSConfig == nil || o.TLSConfig.ServerName != "redis.example.com" || o.Username != "app" || o.Password != "s3cret" || o.Addr != "redis.example.com:6380" || o.DB != 2 {
		t.Errorf("redis options: addr %s db %d user %q password %q tls %v", o.Addr, o.DB, o.Username, o.Password, o.TLSConfig != nil)
	}
	if got, want := c.redisKey(), "repstream:db:5432/shop:shop_slot"; got != want {
		t.Errorf("derived bus key %q, want %q", got, want)
	}
	if c.Bus.PollInterval != 250*time.Millisecond || c.Bus.CheckInterval != time.Second || c.Bus.DrainTimeout != 3*time.Second || c.Bus.RedisMaxLen != 10000 {
		t.Errorf("bus defaults: %+v", c.Bus)
	}
	other, err := loadConfig(writeFile(t, minimal+"slot: other\nbus:\n  redis_url: redis://r:6379/0\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if other.redisKey() == c.redisKey() {
		t.Errorf("two slots share the bus key %q", c.redisKey())
	}
	set, err := loadConfig(writeFile(t, minimal+"bus:\n  redis_url: redis://r:6379/0\n  redis_key: mine\n"), nil)
	if err != nil || set.redisKey() != "mine" {
		t.Errorf("bus.redis_key: %q, %v", set.redisKey(), err)
	}

	_, err = loadConfig(writeFile(t, minimal+"bus:\n  redis_url: http://r:6379\n  poll_interval: 0s\n  check_interval: -1s\n"), nil)
	for _, key := range []string{"bus.redis_url", "bus.poll_interval", "bus.check_interval"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("error %v does not name %s", err, key)
		}
	}
}
