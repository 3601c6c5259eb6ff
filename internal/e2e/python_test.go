package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/pki"
)

// A Python worker (python/) admits calls from its pool only: another
// worker of the network, with a valid certificate from the same CA, is
// refused, and so is a client with no certificate. Its calls through the
// pool work.
func TestPythonWorkerAdmitsOnlyThePool(t *testing.T) {
	python := "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import grpc, google.protobuf, cryptography").Run(); err != nil {
		t.Skip("the Python worker needs Debian's python3-grpcio, python3-protobuf and python3-cryptography (.ci/run installs them): ", err)
	}
	dir := t.TempDir()
	t.Setenv("TASKWORKER_HOME", dir)
	for _, v := range []string{"TASKWORKER_POOL", "TASKWORKER_TOKEN", "TASKWORKER_CA", "TASKWORKER_JOIN_TOKEN_FILE"} {
		t.Setenv(v, "")
	}
	startUp(t, "--dir", dir, "--workers", "1", "--worker-prefix", "go_", "--listen", freeAddr(t))

	root, _ := filepath.Abs("../..")
	cmd := exec.Command(python, filepath.Join(root, "python", "tests", "pyworker.py"), "py_x", filepath.Join(dir, "py_x"))
	cmd.Env = append(os.Environ(), "PYTHONPATH="+filepath.Join(root, "python"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatal("the Python worker printed no port")
	}
	addr := "127.0.0.1:" + strings.TrimSpace(sc.Text())

	if got, err := runCLI(t, nil, "call", "echo_slow", "7"); err != nil || got != "7" {
		t.Fatalf("echo_slow through the pool: %q, %v", got, err)
	}

	cluster, err := os.ReadFile(filepath.Join(dir, "py_x", "identity", "cluster"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	ident := filepath.Join(dir, "workers", "go_001", "identity")
	goWorker, err := tls.LoadX509KeyPair(filepath.Join(ident, "worker.crt"), filepath.Join(ident, "worker.key"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		code codes.Code
	}{
		{"another worker's certificate", &goWorker, codes.PermissionDenied},
		{"no certificate", nil, codes.Unavailable},
	} {
		h := &pki.Holder{}
		if tc.cert != nil {
			h.Set(*tc.cert)
		}
		cfg := pki.ClientConfig(pki.Verify{CA: roots, URI: pki.WorkerURI(strings.TrimSpace(string(cluster)), "py_x")}, h)
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = v1.NewRPCServiceClient(conn).CallFunction(ctx, &v1.FunctionCallRequest{FunctionName: "echo_slow", Args: []byte("[1]")})
		cancel()
		conn.Close()
		if status.Code(err) != tc.code {
			t.Errorf("calling the Python worker with %s: %v, want %v", tc.name, err, tc.code)
		}
	}
}
