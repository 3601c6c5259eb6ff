package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browser finds a Chromium to drive. Without one the test skips, unless
// TASKWORKER_REQUIRE_BROWSER is set (CI sets it: there the test must run).
func browser(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	msg := "no chromium on PATH: install Debian's (apt-get install chromium) to run the dashboard's browser test"
	if os.Getenv("TASKWORKER_REQUIRE_BROWSER") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// artifacts is where the test saves screenshots: $TASKWORKER_ARTIFACTS, or
// a directory under the system's temporary one.
func artifacts(t *testing.T) string {
	dir := os.Getenv("TASKWORKER_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "taskworker-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The pool's dashboard, in a real browser: it signs in from the URL
// fragment, shows the network's workers, and changes when one is killed. A
// user's token sees no storage; an unknown token lands on the login form.
func TestDashboardInABrowser(t *testing.T) {
	chrome := browser(t)
	httpAddr := freeAddr(t)
	n := &network{t: t, dir: t.TempDir(), poolAddr: freeAddr(t), poolArgs: []string{"--http-listen", httpAddr}}
	n.startPool()
	for i := range 3 {
		n.workers = append(n.workers, n.startWorker(fmt.Sprintf("worker_%03d", i+1)))
	}
	n.waitWorkers(3, 20*time.Second)
	base := "http://" + httpAddr + "/"

	// The API refuses a token anywhere but the Authorization header.
	resp, err := http.Get(base + "api/snapshot?token=" + n.token)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a token in the query string: HTTP %d, want 401", resp.StatusCode)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chrome), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	shots := artifacts(t)
	screenshot := func(name string) {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		path := filepath.Join(shots, "dashboard-"+name+".png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
	}
	rows := func() []string {
		ids, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#workers tbody tr")].map(r => r.dataset.worker)`))
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	waitRows := func(want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got := strings.Join(rows(), ",")
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				screenshot("failed")
				t.Fatalf("the page lists workers %q, want %q", got, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(base+"#token="+n.token)); err != nil {
		t.Fatal(err)
	}
	waitRows("worker_001,worker_002,worker_003")
	who, hash, storageHidden := pageState(t, ctx)
	if who != "admin (admin)" || hash != "" || storageHidden {
		t.Fatalf("signed in as %q, URL fragment %q left in the address bar, storage hidden %v", who, hash, storageHidden)
	}
	screenshot("admin")

	n.workers[1].Kill()
	waitRows("worker_001,worker_003")
	screenshot("worker-killed")

	// A user sees the workers but not the network's storage.
	out, err := n.cli("token", "create", "--user", "bob")
	if err != nil {
		t.Fatal(err)
	}
	bob := strings.TrimSpace(out)
	if i := strings.LastIndex(bob, "\n"); i >= 0 {
		bob = bob[i+1:]
	}
	if err := chromedp.Do(ctx, chromedp.Click("#signout"),
		chromedp.WaitVisible("#login"),
		chromedp.SendKeys("#token", bob),
		chromedp.Click(`#login button`)); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("who").textContent === "bob"`)); err != nil {
		t.Fatal(err)
	}
	waitRows("worker_001,worker_003")
	who, _, storageHidden = pageState(t, ctx)
	if who != "bob" || !storageHidden {
		t.Fatalf("as bob: signed in as %q, storage hidden %v", who, storageHidden)
	}
	screenshot("user")

	// An unknown token lands on the login form with the pool's reason.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"#token=tw_unknown"), chromedp.Reload(),
		chromedp.WaitVisible("#login")); err != nil {
		t.Fatal(err)
	}
	loginError, err := chromedp.Run(ctx, chromedp.Poll[string](`document.getElementById("loginerror").textContent || null`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(loginError, "does not know this token") {
		t.Fatalf("login error %q", loginError)
	}

	// What the page shows is what the API gives the same token.
	req, _ := http.NewRequest("GET", base+"api/snapshot", nil)
	req.Header.Set("Authorization", "Bearer "+bob)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var snap struct {
		User    string          `json:"user"`
		Storage json.RawMessage `json:"storage"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil || snap.User != "bob" || snap.Storage != nil {
		t.Fatalf("bob's snapshot: %+v, %v", snap, err)
	}
}

// pageState reads who the page says is signed in, what is left of the URL
// fragment, and whether the storage card is hidden.
func pageState(t *testing.T, ctx context.Context) (who, hash string, storageHidden bool) {
	t.Helper()
	var err error
	if who, err = chromedp.Run(ctx, chromedp.Text("#who")); err != nil {
		t.Fatal(err)
	}
	if hash, err = chromedp.Run(ctx, chromedp.Evaluate[string](`location.hash`)); err != nil {
		t.Fatal(err)
	}
	if storageHidden, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("cardstorage").hidden`)); err != nil {
		t.Fatal(err)
	}
	return who, hash, storageHidden
}
