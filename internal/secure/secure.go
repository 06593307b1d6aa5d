// Package secure holds what the roles need to run with TLS and secrets: client TLS
// configurations from PEM files, a server certificate reloaded when its files change, and
// secrets read from the environment or a file, never from a flag (flags show in ps).
package secure

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// ErrConfig wraps errors in TLS files and secrets.
var ErrConfig = errors.New("tls/secret config")

// Files are the PEM files of a TLS client: the CA that signs the servers' certificates (empty:
// the system's roots) and, for mutual TLS, the client's certificate and key.
type Files struct {
	CAFile, CertFile, KeyFile string
}

// ClientTLS builds a TLS 1.2+ client configuration from f. what names the service in errors
// ("kafka", "clickhouse"). The server name is left empty: kafka-go and clickhouse-go check
// the certificate against the host of the address they dial.
func ClientTLS(what string, f Files) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %s TLS CA file: %w", ErrConfig, what, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: %s TLS CA file %s holds no PEM certificate", ErrConfig, what, f.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, fmt.Errorf("%w: %s TLS client certificate and key go together: give both files or neither", ErrConfig, what)
	}
	if f.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %s TLS client certificate: %w", ErrConfig, what, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Secret returns a secret from the file named by file (when not empty; one trailing newline is
// dropped) or else from the environment variable env. Setting both is an error, so that it is
// never unclear which one is in force. name says what the secret is, in errors; the secret
// itself never appears in them.
func Secret(name, env, file string) (string, error) {
	v, inEnv := os.LookupEnv(env)
	if file == "" {
		return v, nil
	}
	if inEnv {
		return "", fmt.Errorf("%w: %s: both %s and a password file (%s) are set; keep one", ErrConfig, name, env, file)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrConfig, name, err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return "", fmt.Errorf("%w: %s: file %s is empty", ErrConfig, name, file)
	}
	return string(b), nil
}

// ServerCert serves a certificate and key from PEM files and reloads them when either file
// changes (by modification time and size, looked at most once per CheckEvery), so a rotated
// certificate is served without a restart. A pair that fails to load (a half-written file) is
// logged and the previous one kept; the next check tries again.
type ServerCert struct {
	certFile, keyFile string
	log               *slog.Logger
	// CheckEvery is how often a handshake may look at the files (default 1s).
	CheckEvery time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string
	checked time.Time
}

// NewServerCert loads the pair once; a pair that does not load is an error.
func NewServerCert(certFile, keyFile string, log *slog.Logger) (*ServerCert, error) {
	if certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("%w: TLS certificate and key go together: give both files or neither", ErrConfig)
	}
	s := &ServerCert{certFile: certFile, keyFile: keyFile, log: log, CheckEvery: time.Second}
	stamp, err := s.fileStamp()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: TLS certificate %s / key %s: %w", ErrConfig, certFile, keyFile, err)
	}
	s.cert, s.stamp, s.checked = &cert, stamp, time.Now()
	return s, nil
}

func (s *ServerCert) fileStamp() (string, error) {
	var stamp string
	for _, f := range []string{s.certFile, s.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("%w: TLS: %w", ErrConfig, err)
		}
		stamp += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return stamp, nil
}

// GetCertificate is tls.Config.GetCertificate.
func (s *ServerCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.checked) < s.CheckEvery {
		return s.cert, nil
	}
	s.checked = time.Now()
	stamp, err := s.fileStamp()
	if err != nil || stamp == s.stamp {
		if err != nil {
			s.log.Warn("TLS certificate files unreadable; serving the loaded certificate", "err", err)
		}
		return s.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		s.log.Warn("TLS certificate files changed but do not load (yet); serving the previous certificate", "cert_file", s.certFile, "err", err)
		return s.cert, nil
	}
	s.cert, s.stamp = &cert, stamp
	s.log.Info("TLS certificate reloaded", "cert_file", s.certFile)
	return s.cert, nil
}

// TLSConfig is a TLS 1.2+ server configuration serving s.
func (s *ServerCert) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.GetCertificate}
}
