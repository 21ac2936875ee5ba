"""The mover: applies committed cycles to replica disks, seals recovery points, releases cache."""
