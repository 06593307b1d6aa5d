module github.com/maumeter/maumeter/tools/chlaunch

go 1.26
