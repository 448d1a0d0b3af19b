package model

import "testing"

func TestChatTemplates(t *testing.T) {
	msgs := []Message{{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "2+2?"}}
	tests := []struct {
		jinja string
		want  ChatTemplate
		text  string
	}{
		{"{{ '<|start_header_id|>' + message['role'] }}", ChatLlama3,
			"<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"{% for m in messages %}<|im_start|>{{ m.role }}", ChatML,
			"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"},
		{"{{ '[INST] ' + content + ' [/INST]' }}", ChatMistral,
			"[INST] Be brief.\n\nHi [/INST] Hello.</s>[INST] 2+2? [/INST]"},
		{"<<SYS>>\\n' + system + '\\n<</SYS>> [INST]", ChatLlama2,
			"[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello.</s>[INST] 2+2? [/INST]"},
		{"", ChatPlain, "system: Be brief.\nuser: Hi\nassistant: Hello.\nuser: 2+2?\nassistant:"},
	}
	for _, tt := range tests {
		c := DetectChatTemplate(tt.jinja)
		if c != tt.want {
			t.Errorf("Detect(%q) = %v, want %v", tt.jinja, c, tt.want)
			continue
		}
		got, err := c.Render(msgs)
		if err != nil || got != tt.text {
			t.Errorf("%v.Render =\n%q\nwant\n%q (err %v)", c, got, tt.text, err)
		}
		if p, err := ParseChatTemplate(c.String()); err != nil || p != c {
			t.Errorf("ParseChatTemplate(%q) = %v, %v", c.String(), p, err)
		}
	}
	if _, err := ChatML.Render([]Message{{"robot", "x"}}); err == nil {
		t.Error("bad role: no error")
	}
}
