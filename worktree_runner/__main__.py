from worktree_runner.cli import main

main()
