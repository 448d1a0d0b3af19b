package tensor

import (
	"fmt"
	"sync"
	"time"
)

// RegionLabel names what a Pool's parallel regions compute, for a
// RegionTrace: Name (say "ffn_down") of model layer Layer, or of no
// layer where Layer < 0.
type RegionLabel struct {
	Name  string
	Layer int
}

// String returns "L3 ffn_down", the name alone where the label has no
// layer, and "unlabelled" for the zero label (regions before the first
// Pool.Label).
func (l RegionLabel) String() string {
	if l == (RegionLabel{}) {
		return "unlabelled"
	}
	if l.Layer < 0 {
		return l.Name
	}
	return fmt.Sprintf("L%d %s", l.Layer, l.Name)
}

// RegionStat is what a RegionTrace recorded of the regions of one label,
// each time a sum over those regions (and, for the goroutines' times,
// over the Threads goroutines of each):
//
//	Threads·Wall = Busy + Late + Gaps + Tail
//	Busy = Items + PhaseWait + the rest of the tasks (the products' rows)
type RegionStat struct {
	Label   RegionLabel
	Threads int // goroutines of each region, the caller included
	Regions int // regions run
	Tasks   int // tasks run
	// Wall is from the region's start (its tasks handed out) to its
	// end (its caller returning, every task done).
	Wall time.Duration
	// Busy is the goroutines' time inside tasks.
	Busy time.Duration
	// Slowest is, for each region, the busiest goroutine's Busy: with
	// Busy/Threads, how even the shares were.
	Slowest time.Duration
	// Late is the time from the region's start to each goroutine's
	// first task: the wake-up.
	Late time.Duration
	// Tail is the time each goroutine waited at the region's end: from
	// its last task's end to the region's; a goroutine that ran no task
	// waited the whole region.
	Tail time.Duration
	// Items is the time in the items of a product's phases inside its
	// tasks (preparing the vectors: the norms, a row's attention, …;
	// packing them), and PhaseWait the time tasks waited for other
	// goroutines' items before computing their rows.
	Items, PhaseWait time.Duration
	// Taskless counts, over the regions, the goroutines that ran no task
	// of theirs (all the tasks were taken before they came to them).
	Taskless int
}

// Gaps is the goroutines' time between their tasks (taking the next
// one): Threads·Wall less Busy, Late and Tail.
func (s RegionStat) Gaps() time.Duration {
	return time.Duration(s.Threads)*s.Wall - s.Busy - s.Late - s.Tail
}

// WaitShare is the share of the goroutines' time in the regions not
// spent in tasks: 1 − Busy/(Threads·Wall).
func (s RegionStat) WaitShare() float64 {
	if s.Wall <= 0 {
		return 0
	}
	return 1 - float64(s.Busy)/(float64(s.Threads)*float64(s.Wall))
}

// IdleShare is WaitShare with the tasks' waits for the phases' items
// counted as waits too: 1 − (Busy − PhaseWait)/(Threads·Wall), the share
// of the goroutines' time not spent computing.
func (s RegionStat) IdleShare() float64 {
	if s.Wall <= 0 {
		return 0
	}
	return 1 - float64(s.Busy-s.PhaseWait)/(float64(s.Threads)*float64(s.Wall))
}

// A RegionTrace records the parallel regions of the Pool it is set on
// (Pool.SetTrace) per label (Pool.Label): their wall time, the
// goroutines' time in tasks, the time each waited at a region's start
// and end, and inside a product's tasks the time in its phases' items
// and waiting for them. It is for finding which regions of a step wait:
// a traced region reads the clock around every task. Its zero value is
// ready to use; its methods are safe for concurrent use.
type RegionTrace struct {
	mu    sync.Mutex
	label RegionLabel
	stats map[RegionLabel]*RegionStat
	order []RegionLabel // the labels in the order first seen
	// slots is each goroutine's account of the region running, written
	// by that goroutine only (as it runs tasks) and read by the caller
	// of Run once every task is done; reset by the caller before the
	// region starts. Sized by SetTrace, under the Pool's lock.
	slots []traceSlot
}

// traceSlot is one goroutine's account of a region, times since its
// start; 64 bytes.
type traceSlot struct {
	tasks                          int32
	first, last, busy, items, wait time.Duration
	_                              [16]byte
}

// Stats returns what t recorded, one RegionStat a label, in the order
// the labels were first seen.
func (t *RegionTrace) Stats() []RegionStat {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]RegionStat, 0, len(t.order))
	for _, l := range t.order {
		out = append(out, *t.stats[l])
	}
	return out
}

// Reset forgets what t recorded.
func (t *RegionTrace) Reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stats, t.order = nil, nil
}

// setLabel makes l the label of the regions that follow.
func (t *RegionTrace) setLabel(l RegionLabel) {
	t.mu.Lock()
	t.label = l
	t.mu.Unlock()
}

// begin clears the goroutines' accounts for a region.
func (t *RegionTrace) begin() { clear(t.slots) }

// end adds a region of wall time wall, its goroutines' accounts in
// t.slots, to the current label's stat.
func (t *RegionTrace) end(wall time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.stats[t.label]
	if st == nil {
		if t.stats == nil {
			t.stats = make(map[RegionLabel]*RegionStat)
		}
		st = &RegionStat{Label: t.label, Threads: len(t.slots)}
		t.stats[t.label] = st
		t.order = append(t.order, t.label)
	}
	st.Regions++
	st.Wall += wall
	var slowest time.Duration
	for i := range t.slots {
		s := &t.slots[i]
		if s.tasks == 0 {
			st.Tail += wall
			st.Taskless++
			continue
		}
		st.Tasks += int(s.tasks)
		st.Busy += s.busy
		st.Items += s.items
		st.PhaseWait += s.wait
		st.Late += s.first
		st.Tail += max(0, wall-s.last)
		slowest = max(slowest, s.busy)
	}
	st.Slowest += slowest
}

// SetTrace makes the Pool record its regions in t from its next region
// on (nil: stop recording). It waits for a region running to end. The
// Pool records nothing by default, and then reads no clock.
func (p *Pool) SetTrace(t *RegionTrace) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if t != nil && len(t.slots) != p.threads {
		t.mu.Lock()
		t.slots = make([]traceSlot, p.threads)
		t.mu.Unlock()
	}
	p.trace.Store(t)
}

// Label names the Pool's regions that follow, until the next Label, for
// its RegionTrace; without one it does nothing. The goroutine that runs
// a step's regions labels them: labels from several goroutines at once
// mix.
func (p *Pool) Label(name string, layer int) {
	if p == nil {
		return
	}
	if t := p.trace.Load(); t != nil {
		t.setLabel(RegionLabel{name, layer})
	}
}

// regionTrace returns the Pool's RegionTrace, nil where none is set.
func (p *Pool) regionTrace() *RegionTrace {
	if p == nil {
		return nil
	}
	return p.trace.Load()
}
