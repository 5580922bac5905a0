// df2llb: BuildKit v0.11.6's own Dockerfile frontend (builder.Build) run against a stand-in
// for the gateway, writing the definitions it would have the daemon solve (def-N.pb in --out):
// what scripts/record_differential.py --llb records. --opt and --local as buildctl's; --images
// a JSON file of each repository's digest and configs by platform, which the stand-in answers
// ResolveImageConfig with. Build it in a BuildKit v0.11.6 source tree:
//
//	mkdir cmd/df2llb && cp scripts/df2llb.go cmd/df2llb/main.go
//	GOFLAGS=-mod=vendor CGO_ENABLED=0 go build -o df2llb ./cmd/df2llb
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containerd/containerd/platforms"
	"github.com/docker/distribution/reference"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/frontend/dockerfile/builder"
	"github.com/moby/buildkit/frontend/gateway/client"
	gwpb "github.com/moby/buildkit/frontend/gateway/pb"
	"github.com/moby/buildkit/solver/pb"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	fstypes "github.com/tonistiigi/fsutil/types"
)

type image struct {
	Digest  string            `json:"digest"`
	Configs map[string]string `json:"configs"` // by platform ("" for any)
}

type fake struct {
	opts    map[string]string
	locals  map[string]string
	images  map[string]image
	out     string
	mu      sync.Mutex
	written int
}

type ref struct {
	dir string
	def *pb.Definition
}

func (r *ref) ToState() (llb.State, error) { return llb.State{}, fmt.Errorf("no state") }
func (r *ref) Evaluate(ctx context.Context) error { return nil }
func (r *ref) ReadFile(ctx context.Context, req client.ReadRequest) ([]byte, error) {
	if r.dir == "" {
		return nil, fmt.Errorf("open %s: no such file or directory", req.Filename)
	}
	dt, err := os.ReadFile(filepath.Join(r.dir, req.Filename))
	if err != nil {
		return nil, err
	}
	if req.Range != nil && int(req.Range.Offset) < len(dt) {
		end := int(req.Range.Offset) + req.Range.Length
		if end > len(dt) {
			end = len(dt)
		}
		dt = dt[req.Range.Offset:end]
	}
	return dt, nil
}
func (r *ref) StatFile(ctx context.Context, req client.StatRequest) (*fstypes.Stat, error) {
	return nil, fmt.Errorf("no stat")
}
func (r *ref) ReadDir(ctx context.Context, req client.ReadDirRequest) ([]*fstypes.Stat, error) {
	return nil, fmt.Errorf("no readdir")
}

// A definition that reads only one local directory is a read of the client's files (the
// Dockerfile, an ignore file); any other is the build's, written out.
func (f *fake) Solve(ctx context.Context, req client.SolveRequest) (*client.Result, error) {
	local := ""
	other := false
	for _, dt := range req.Definition.Def {
		var op pb.Op
		if err := op.Unmarshal(dt); err != nil {
			return nil, err
		}
		switch o := op.Op.(type) {
		case *pb.Op_Source:
			if strings.HasPrefix(o.Source.Identifier, "local://") {
				local = strings.TrimPrefix(o.Source.Identifier, "local://")
			} else {
				other = true
			}
		case nil:
		default:
			other = true
		}
	}
	res := client.NewResult()
	if local != "" && !other {
		dir, ok := f.locals[local]
		if !ok {
			return nil, fmt.Errorf("no local %s", local)
		}
		res.SetRef(&ref{dir: dir})
		return res, nil
	}
	f.mu.Lock()
	f.written++
	n := f.written
	f.mu.Unlock()
	dt, err := req.Definition.Marshal()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(f.out, fmt.Sprintf("def-%d.pb", n)), dt, 0o644); err != nil {
		return nil, err
	}
	res.SetRef(&ref{def: req.Definition})
	return res, nil
}

func (f *fake) ResolveImageConfig(ctx context.Context, name string, opt llb.ResolveImageConfigOpt) (digest.Digest, []byte, error) {
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return "", nil, err
	}
	img, ok := f.images[named.Name()]
	if !ok {
		return "", nil, fmt.Errorf("%s: not found", name)
	}
	p := platforms.DefaultSpec()
	if opt.Platform != nil {
		p = *opt.Platform
	}
	key := platforms.Format(platforms.Normalize(p))
	cfg, ok := img.Configs[key]
	if !ok {
		cfg, ok = img.Configs[""]
	}
	if !ok {
		return "", nil, fmt.Errorf("no match for platform in manifest %s: not found", img.Digest)
	}
	return digest.Digest(img.Digest), []byte(cfg), nil
}

func (f *fake) BuildOpts() client.BuildOpts {
	return client.BuildOpts{
		Opts:      f.opts,
		SessionID: "session",
		Workers:   []client.WorkerInfo{{Platforms: []ocispecs.Platform{platforms.Normalize(platforms.DefaultSpec())}}},
		LLBCaps:   pb.Caps.CapSet(pb.Caps.All()),
		Caps:      gwpb.Caps.CapSet(gwpb.Caps.All()),
	}
}

func (f *fake) Inputs(ctx context.Context) (map[string]llb.State, error) {
	return map[string]llb.State{}, nil
}

func (f *fake) NewContainer(ctx context.Context, req client.NewContainerRequest) (client.Container, error) {
	return nil, fmt.Errorf("no containers")
}

func (f *fake) Warn(ctx context.Context, dgst digest.Digest, msg string, opts client.WarnOpts) error {
	return nil
}

func main() {
	f := &fake{opts: map[string]string{}, locals: map[string]string{}}
	args := os.Args[1:]
	for i := 0; i+1 < len(args); i += 2 {
		name, val, _ := strings.Cut(args[i+1], "=")
		switch args[i] {
		case "--opt":
			f.opts[name] = val
		case "--local":
			f.locals[name] = val
		case "--images":
			dt, err := os.ReadFile(args[i+1])
			if err == nil {
				err = json.Unmarshal(dt, &f.images)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "error: %v\n", err)
				os.Exit(2)
			}
		case "--out":
			f.out = args[i+1]
		}
	}
	if _, err := builder.Build(context.Background(), f); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}
