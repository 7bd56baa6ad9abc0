package demo

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Writer is what the simulator writes through: the same SQL statements as the
// legacy upload API and processing worker.
type Writer interface {
	InsertVideo(ctx context.Context, id, rawPath string) error
	SetVideoStatus(ctx context.Context, id, status string) error
	PublishProgress(ctx context.Context, id string, percent float64, stage string) error
}

// Simulator uploads videos and walks each through pending → processing →
// processed (some failed), publishing video.progress per stage, at a human pace.
type Simulator struct {
	// Every is how often a video is uploaded; Step is the pause between two
	// progress events.
	Every, Step time.Duration
	// Active bounds the videos processed at once.
	Active int
	Logger zerolog.Logger

	w Writer
}

// NewSimulator returns a simulator writing through w.
func NewSimulator(w Writer, log zerolog.Logger) *Simulator {
	return &Simulator{Every: 3 * time.Second, Step: 400 * time.Millisecond, Active: 4, Logger: log, w: w}
}

// stages are the processing steps, each ending at the given percent.
var stages = []struct {
	name string
	upTo float64
}{{"probe", 10}, {"transcode", 85}, {"package", 100}}

// Run uploads and processes videos until ctx ends.
func (s *Simulator) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, s.Active)
	tick := time.NewTicker(s.Every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case slots <- struct{}{}:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			if err := s.process(ctx, newID()); err != nil && ctx.Err() == nil {
				s.Logger.Warn().Err(err).Msg("demo video abandoned")
			}
		}()
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (s *Simulator) process(ctx context.Context, id string) error {
	if err := s.w.InsertVideo(ctx, id, "/uploads/"+id+".mp4"); err != nil {
		return err
	}
	if !s.sleep(ctx, 2*s.Step+rand.N(4*s.Step)) {
		return nil
	}
	if err := s.w.SetVideoStatus(ctx, id, "processing"); err != nil {
		return err
	}
	failAt := 101.0
	if rand.N(10) == 0 {
		failAt = 20 + rand.Float64()*60
	}
	percent := 0.0
	for _, st := range stages {
		for percent < st.upTo {
			percent = min(st.upTo, percent+1+rand.Float64()*9)
			if percent >= failAt {
				return s.w.SetVideoStatus(ctx, id, "failed")
			}
			if err := s.w.PublishProgress(ctx, id, float64(int(percent)), st.name); err != nil {
				return err
			}
			if !s.sleep(ctx, s.Step/2+rand.N(s.Step)) {
				return nil
			}
		}
	}
	return s.w.SetVideoStatus(ctx, id, "processed")
}

func (s *Simulator) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

const idAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-"

// newID returns a 10-character id like the API's nanoid(10).
func newID() string {
	b := make([]byte, 10)
	for i := range b {
		b[i] = idAlphabet[rand.N(len(idAlphabet))]
	}
	return string(b)
}
