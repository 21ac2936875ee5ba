"""The sample server and the walkthrough (`godwit demo`), on the library API only."""
