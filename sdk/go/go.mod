module github.com/maumeter/maumeter/sdk/go

go 1.22
