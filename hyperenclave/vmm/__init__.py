"""The monitor (VMM): extended page tables, IOMMU tables, VMX/vCPU glue and hypercalls."""
