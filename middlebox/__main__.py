from middlebox.cli import main

raise SystemExit(main())
