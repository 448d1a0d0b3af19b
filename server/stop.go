package server

import "strings"

// stopMatcher finds the first stop sequence in streamed text. It holds
// back the end of the text that could still become a stop sequence, so
// that no part of one is ever sent.
type stopMatcher struct {
	stops []string
	held  string
}

// feed adds text and returns what can be sent now; stopped reports that a
// stop sequence was found (the text before it is returned, nothing after).
func (m *stopMatcher) feed(text string) (out string, stopped bool) {
	if len(m.stops) == 0 {
		return text, false
	}
	buf := m.held + text
	first := -1
	for _, s := range m.stops {
		if i := strings.Index(buf, s); i >= 0 && (first < 0 || i < first) {
			first = i
		}
	}
	if first >= 0 {
		m.held = ""
		return buf[:first], true
	}
	// Hold back the longest end of buf that begins some stop sequence.
	keep := 0
	for _, s := range m.stops {
		for k := min(len(s)-1, len(buf)); k > keep; k-- {
			if strings.HasSuffix(buf, s[:k]) {
				keep = k
				break
			}
		}
	}
	m.held = buf[len(buf)-keep:]
	return buf[:len(buf)-keep], false
}

// flush returns the text held back at the end of generation.
func (m *stopMatcher) flush() string {
	out := m.held
	m.held = ""
	return out
}
