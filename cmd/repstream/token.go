package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spf13/cobra"

	"github.com/repstream/repstream/api"
)

func init() {
	subcommands = append(subcommands, func() *cobra.Command {
		cmd := &cobra.Command{
			Use:   "token",
			Short: "Mint an HS256 token for the API from the configured secret file",
			Long: "token signs a JWT with the secret in auth.jwt_hs256_secret_file (or --secret-file),\n" +
				"for scripts, curl and tests. Production tokens usually come from your own identity service.",
			Args: cobra.NoArgs,
		}
		path := cmd.Flags().String("config", "", "configuration file (reads auth.jwt_hs256_secret_file)")
		secretFile := cmd.Flags().String("secret-file", "", "HS256 secret file (overrides the configuration)")
		subjects := cmd.Flags().StringSlice("subjects", []string{"*"}, "subjects or prefixes ending in * the bearer may read")
		ttl := cmd.Flags().Duration("ttl", time.Hour, "how long the token is valid")
		sub := cmd.Flags().String("sub", "repstream-token", "the token's subject claim (who it is for)")
		admin := cmd.Flags().Bool("admin", false, "add the admin claim (repstream_admin: true) that GET /v1/status needs")
		cmd.RunE = func(cmd *cobra.Command, _ []string) error {
			file := *secretFile
			if file == "" && *path != "" {
				cfg, err := loadConfig(*path, nil)
				if cfg == nil {
					return err
				}
				file = cfg.Auth.HS256SecretFile
			}
			if file == "" {
				return fmt.Errorf("token: no secret: pass --secret-file or a --config with auth.jwt_hs256_secret_file")
			}
			b, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("token: %w", err)
			}
			secret := []byte(strings.TrimSpace(string(b)))
			if len(secret) < 32 {
				return fmt.Errorf("token: the secret in %s is shorter than 32 bytes; use a longer one", file)
			}
			tok, err := mintToken(secret, *sub, *subjects, *ttl, *admin)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		}
		return cmd
	})
}

// mintToken signs an HS256 token for sub granting subjects, issued now and
// valid for ttl: the claims the API's authentication reads. An admin token
// also carries api.DefaultAdminClaim, for /v1/status.
func mintToken(secret []byte, sub string, subjects []string, ttl time.Duration, admin bool) (string, error) {
	now := time.Now()
	c := jwt.MapClaims{"sub": sub, "subjects": subjects, "iat": now.Unix(), "exp": now.Add(ttl).Unix()}
	if admin {
		c[api.DefaultAdminClaim] = true
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}
