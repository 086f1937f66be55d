from simdiff.cli import main

raise SystemExit(main())
