module github.com/turbomem/turbomem

go 1.26
