package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/auth"
)

//go:embed web
var web embed.FS

// Config is what a dashboard needs.
type Config struct {
	// Conn reaches the pool's gRPC API. It must carry no credentials of
	// its own: each request's token is sent with its RPCs.
	Conn grpc.ClientConnInterface
	// Gatherer is the registry whose call metrics the page draws; nil: no
	// call charts.
	Gatherer prometheus.Gatherer
	// Logger logs failed snapshots; nil: discard.
	Logger *slog.Logger
}

// Dashboard serves the page and its snapshots.
type Dashboard struct {
	cfg     Config
	sampler *sampler
	mux     *http.ServeMux
}

// sampleEvery and keepSamples size the call history: two minutes.
const (
	sampleEvery = 2 * time.Second
	keepSamples = 60
)

// New returns a dashboard; Run samples the call metrics while it serves.
func New(cfg Config) *Dashboard {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Dashboard{cfg: cfg, mux: http.NewServeMux()}
	if cfg.Gatherer != nil {
		d.sampler = newSampler(cfg.Gatherer, keepSamples)
	}
	static, _ := fs.Sub(web, "web")
	files := http.FileServerFS(static)
	d.mux.Handle("GET /{$}", files)
	d.mux.Handle("GET /app.js", files)
	d.mux.Handle("GET /style.css", files)
	d.mux.HandleFunc("GET /api/snapshot", d.snapshot)
	return d
}

// Run samples the call metrics until ctx ends.
func (d *Dashboard) Run(ctx context.Context) {
	if d.sampler != nil {
		d.sampler.run(ctx, sampleEvery)
	}
}

func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// The page loads only its own files, is never framed, and never sends
	// where it came from (its URL may carry a token in the fragment).
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	d.mux.ServeHTTP(w, r)
}

func (d *Dashboard) snapshot(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" || strings.ContainsAny(token, "\r\n") {
		writeError(w, http.StatusUnauthorized, "sign in with a token: send it as Authorization: Bearer <token>")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, auth.HeaderAuthorization, "Bearer "+token)
	s, err := Collect(ctx, d.cfg.Conn)
	if err != nil {
		code := http.StatusBadGateway
		msg := "the pool did not answer: " + err.Error()
		switch status.Code(err) {
		case codes.Unauthenticated:
			code, msg = http.StatusUnauthorized, "the pool does not know this token: sign in with another"
		case codes.PermissionDenied:
			code, msg = http.StatusForbidden, "this token may not see the network: sign in with a user's or an admin's token"
		}
		if code == http.StatusBadGateway {
			d.cfg.Logger.Warn("dashboard snapshot failed", "err", err)
		}
		writeError(w, code, msg)
		return
	}
	if s.Admin && d.sampler != nil {
		s.Calls = d.sampler.history()
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
