//go:build unix

package filebackend

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/region"
)

// The tests that need another process re-execute the test binary: TestMain
// runs the role named by envChild instead of the tests. A child reports on
// stdout, one "@@" line per message, and lives until it is killed.
const (
	envChild = "FILEBACKEND_CHILD" // the child's role
	envDir   = "FILEBACKEND_DIR"   // the backend's directory
	envKey   = "FILEBACKEND_KEY"   // the key the role works on
)

// eventually bounds every wait of a test, so a bug fails instead of hanging.
const eventually = 60 * time.Second

func TestMain(m *testing.M) {
	if role := os.Getenv(envChild); role != "" {
		os.Exit(runChild(role))
	}
	os.Exit(m.Run())
}

// runChild runs a child role; it returns only on failure.
func runChild(role string) int {
	fail := func(err error) int {
		fmt.Printf("@@error %v\n", err)
		return 1
	}
	dir, key := os.Getenv(envDir), os.Getenv(envKey)
	ctx := context.Background()
	switch role {
	case "holdkey":
		// Takes the key's lock and keeps it.
		b, err := New(dir)
		if err != nil {
			return fail(err)
		}
		ok, err := b.Lock(key).TryLock(ctx)
		if err != nil || !ok {
			return fail(fmt.Errorf("TryLock = %v, %v", ok, err))
		}
		fmt.Println("@@locked")
	case "holdstore":
		// Writes key = "from the child", then takes the file for an
		// operation that never ends (as one stuck in its transaction
		// would): it holds the store lock until it dies.
		b, err := New(dir)
		if err != nil {
			return fail(err)
		}
		if err := b.SetMulti(ctx, []region.Item{{Key: key, Value: []byte("from the child")}}); err != nil {
			return fail(err)
		}
		if _, err := b.st.acquire(ctx, true); err != nil {
			return fail(err)
		}
		fmt.Println("@@written")
	case "creator":
		// Leads the regeneration of key in a region and never finishes.
		b, err := New(dir)
		if err != nil {
			return fail(err)
		}
		r := region.New(b, region.WithName("r"))
		_, err = region.GetOrCreate(ctx, r, key, func(context.Context) (string, error) {
			fmt.Println("@@creating")
			select {} // until killed
		})
		return fail(fmt.Errorf("GetOrCreate returned: %v", err))
	default:
		return fail(fmt.Errorf("unknown role %q", role))
	}
	_, _ = io.Copy(io.Discard, os.Stdin) // until killed, or the parent goes
	select {}
}

// child is a running child process.
type child struct {
	t    *testing.T
	cmd  *exec.Cmd
	msgs chan string

	mu  sync.Mutex
	out strings.Builder // guarded by mu: everything else it wrote
}

// startChild starts the test binary in role on dir and key; it is killed
// when the test ends (or when the parent dies).
func startChild(t *testing.T, role, dir, key string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+role, envDir+"="+dir, envKey+"="+key)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, cmd: cmd, msgs: make(chan string, 16)}
	cmd.Stderr = (*childOut)(c)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.msgs)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m, ok := strings.CutPrefix(sc.Text(), "@@"); ok {
				c.msgs <- m
				continue
			}
			_, _ = (*childOut)(c).Write([]byte(sc.Text() + "\n"))
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		c.kill()
	})
	return c
}

type childOut child

func (w *childOut) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.Write(p)
}

// expect waits for the child's next message and checks it.
func (c *child) expect(want string) {
	c.t.Helper()
	select {
	case m, ok := <-c.msgs:
		if !ok || m != want {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.t.Fatalf("child said %q (open %v), want %q; output:\n%s", m, ok, want, c.out.String())
		}
	case <-time.After(eventually):
		c.t.Fatalf("child did not say %q within %v", want, eventually)
	}
}

// kill SIGKILLs the child and waits until it is gone.
func (c *child) kill() {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	// The pipe closes once the process is gone: read it all before Wait.
	for range c.msgs {
	}
	_ = c.cmd.Wait()
}
